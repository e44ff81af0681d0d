"""A quantized model on disk (fake-quantized format, version 1): the float master weights and the
quantizer parameters in ``model.safetensors``, the ``transformers`` config and tokenizer files, and a
JSON manifest ``quantgpt.json`` with the quantization config and the SHA-256 of every file.

Folders are written to a temporary sibling and renamed at the end, so a failed run leaves nothing."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from .config import QuantConfig
from .errors import QuantGPTError
from .models import MANIFEST, _auto_class

FORMAT = "quantgpt-fakequant"
VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = True):
    """Yield a temporary folder next to ``out``; on success it replaces ``out``, on error it is removed."""
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not out.is_dir():
        raise QuantGPTError(f"{out} exists and is not a folder")
    if out.exists() and not overwrite:
        raise QuantGPTError(f"{out} exists; choose another --out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_manifest(folder: Path, manifest: dict) -> None:
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


def read_manifest(folder: Path, verify: bool = True) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise QuantGPTError(f"{path}: unreadable manifest ({type(e).__name__})") from None
    if verify:
        for name, digest in manifest.get("files", {}).items():
            f = Path(folder) / name
            if not f.is_file():
                raise QuantGPTError(f"{f}: missing (listed in {MANIFEST})")
            if sha256_file(f) != digest:
                raise QuantGPTError(f"{f}: checksum mismatch, the file is truncated or altered")
    return manifest


@contextmanager
def atomic_files(out: str | os.PathLike):
    """Like :func:`atomic_dir`, but keeps what else ``out`` holds (a training run's logs and checkpoint):
    the new files are written to a temporary folder inside it and moved in, the manifest last."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=out))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    names = sorted(p.name for p in tmp.iterdir())
    for name in sorted(names, key=lambda n: n == MANIFEST):
        os.replace(tmp / name, out / name)
    tmp.rmdir()


def save_fakequant(model, tokenizer, out, extra: dict | None = None, merge: bool = False) -> Path:
    """Write a quantized model (from :func:`quantize_model`) to ``out``; returns the folder.

    ``merge=True`` adds the model's files to an existing folder instead of replacing it."""
    cfg: QuantConfig = model.quant_config
    with (atomic_files(out) if merge else atomic_dir(out)) as tmp:
        model.config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        manifest = {"format": FORMAT, "version": VERSION, "quant_config": cfg.to_dict(),
                    "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
        manifest.update(extra or {})
        write_manifest(tmp, manifest)
    return Path(out)


def load(folder, dtype: torch.dtype | None = None, device=None, return_tokenizer: bool = False, unpack: bool = False,
         kernel: bool = False):
    """Load a model folder written by quantgpt (packed or fake-quantized); the model (and tokenizer if asked).
    ``unpack``: a packed model's matrices are dequantized once here, not at every forward (packed.unpack_weights:
    faster, with float memory). ``kernel``: its linear layers multiply from the packed codes with the Triton kernel
    (packed.use_kernel; CUDA only). A fake-quantized folder ignores both."""
    from transformers import AutoTokenizer

    from . import packed

    folder = Path(folder)
    manifest = read_manifest(folder)
    fmt, version = manifest.get("format"), manifest.get("version")
    if fmt == packed.FORMAT and version == packed.VERSION:
        model = packed.load_packed(folder, manifest, dtype=dtype, device=device, unpack=unpack, kernel=kernel)
    elif fmt == FORMAT and version == VERSION:
        model = _load_fakequant(folder, manifest, dtype, device)
    else:
        raise QuantGPTError(f"{folder / MANIFEST}: format {fmt!r} version {version} is not known to this quantgpt "
                            f"(it reads {packed.FORMAT} v{packed.VERSION} and {FORMAT} v{VERSION}); upgrade quantgpt")
    if return_tokenizer:
        return model, AutoTokenizer.from_pretrained(folder)
    return model


def _load_fakequant(folder: Path, manifest: dict, dtype, device):
    from transformers import AutoConfig

    from .convert import quantize_model

    config = AutoConfig.from_pretrained(folder)
    model = _auto_class(config).from_config(config)
    quantize_model(model, QuantConfig.from_dict(manifest["quant_config"]), init=False)
    path = folder / "model.safetensors"
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise QuantGPTError(f"{path}: unreadable or does not match the model ({str(e).splitlines()[0]})") from None
    return finish_loading(model, path, missing, unexpected, dtype, device)


def finish_loading(model, path, missing, unexpected, dtype=None, device=None):
    """The end of every loader: a one-line error when the file's tensors do not match the model, then the asked
    dtype and device, in eval mode."""
    if missing or unexpected:
        first = [*missing, *unexpected][0]
        raise QuantGPTError(f"{path}: does not match the model ({len(missing)} missing, {len(unexpected)} unexpected "
                            f"tensors: {first})")
    if dtype is not None:
        model.to(dtype)
    if device is not None:
        model.to(device)
    return model.eval()
