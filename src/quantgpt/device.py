"""Where and in what precision to run: ``--device auto|cpu|cuda`` and ``--dtype``."""
from __future__ import annotations

import gc
from contextlib import nullcontext

import torch

from .errors import QuantGPTError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise QuantGPTError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise QuantGPTError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype: bf16 autocast on GPU, float32 on CPU, unless asked otherwise."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise QuantGPTError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16")
    return DTYPES[name]


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    if dtype in (torch.bfloat16, torch.float16):
        return torch.autocast(device.type, dtype=dtype)
    return nullcontext()


def free_memory() -> None:
    """Collect garbage held in reference cycles (a Trainer holds itself in some: its scheduler's lr lambda) and give
    the GPU's cached blocks back, so a finished run's student, optimizer state and teacher cache leave the GPU."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
