"""The one exception type users see: a one-line message that says what is wrong and how to fix it."""


class QuantGPTError(Exception):
    """Bad input from the user (file, model, setting). The CLI prints it as one line and exits with code 2."""
