"""The run's schedules share one shape: a progress from a start step to the last, and a cosine fall along it
(the learning rate in trainer.lr_factor, the freezing threshold in freeze.threshold_at)."""
from __future__ import annotations

import math


def progress(step: int, begin: int, total: int) -> float:
    """How far ``step`` is from ``begin`` to ``total``, from 0 to 1 (1 from ``total`` on)."""
    return min(1.0, (step - begin) / max(1, total - begin))


def cosine(p: float) -> float:
    """A cosine fall from 1 at ``p`` = 0 to 0 at ``p`` = 1."""
    return 0.5 * (1 + math.cos(math.pi * p))
