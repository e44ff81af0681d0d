"""Activation quantizer for the input of every quantized linear layer.

Dynamic symmetric quantization: the scale of each token (``token``), of each group of ``group_size``
consecutive features of a token (``group``, as in per-token-group FP8 training) or of the whole tensor
(``tensor``) is max|x| / (2^(b-1) - 1), computed on the fly, so nothing is clipped and the backward is the
identity. A token's few outlier features set the step of all its features under ``token``; ``group``
confines them to their group.
With ``learned_clip`` a learnable clip value alpha replaces max|x| (PACT for activations): x is clipped to
[-alpha, alpha], dL/dx = g inside and dL/dalpha = sum g * sign(x) outside.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import QuantGPTError
from .base import sym_levels


def dynamic_fake_quant(x: torch.Tensor, k: int, group: int) -> torch.Tensor:
    """Round ``x`` to its dynamic grid (no gradient). ``group``: -1 one scale per tensor, 0 per token,
    g > 0 per g consecutive features of a token."""
    xf = x.detach().float()
    if group > 0:
        xf = xf.reshape(*x.shape[:-1], x.shape[-1] // group, group)
    amax = xf.abs().amax() if group < 0 else xf.abs().amax(-1, keepdim=True)
    scale = (amax / k).clamp_min(1e-8)
    return (torch.round(xf / scale) * scale).reshape(x.shape).to(x.dtype)


def dynamic_act_ste(x: torch.Tensor, k: int, group: int) -> torch.Tensor:
    """Forward: :func:`dynamic_fake_quant`; backward: the identity (nothing is clipped).

    Written as ``x + (Q(x) - x).detach()`` rather than as an autograd Function: an identity-backward
    Function here trained wrongly inside ``torch.compile``d blocks on CUDA (torch 2.11; 2-16-8 test
    perplexity 1434 compiled vs 137 eager after 300 steps, docs/BENCHMARKS.md); compiled, this expression
    trains as expected (its gradient is exactly the identity, as the tests check in eager mode).
    """
    return x + (dynamic_fake_quant(x, k, group) - x).detach()


def clipped_act_ste(x: torch.Tensor, alpha: torch.Tensor, k: int) -> torch.Tensor:
    """PACT on activations: forward ``round(clip(x, -alpha, alpha) / s) * s`` with ``s = alpha / k``; backward
    (PACT's rule) ``dL/dx = g`` inside the clip range and ``dL/dalpha = sum g * sign(x)`` outside: exactly
    autograd's gradient of the clamp, with the rounding made straight-through (written as an expression for the
    same reason as :func:`dynamic_act_ste`)."""
    a = alpha.to(x.dtype).clamp_min(1e-8)
    xc = torch.clamp(x, -a, a)
    s = (a.detach().float() / k)
    q = (torch.round(xc.detach().float() / s) * s).to(x.dtype)
    return xc + (q - xc).detach()


class ActQuantizer(nn.Module):
    def __init__(self, bits: int = 8, granularity: str = "token", learned_clip: bool = False, group_size: int | None = None):
        super().__init__()
        self.bits = bits
        self.k = sym_levels(bits)
        self.granularity = granularity
        self.group_size = group_size if granularity == "group" else None
        if granularity == "group" and not group_size:
            raise ValueError("group activation quantization needs a group size")
        self.learned_clip = learned_clip
        if learned_clip:
            self.alpha = nn.Parameter(torch.zeros(1))
        self._clip_ready = False  # the learned clip starts at the largest |x| of the first batch

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._clip_ready = True

    def forward(self, x):
        if self.learned_clip:
            if not self._clip_ready:
                with torch.no_grad():
                    self.alpha.copy_(x.detach().abs().max().float().reshape(1))
                self._clip_ready = True
            return clipped_act_ste(x, self.alpha, self.k)
        if self.group_size and x.shape[-1] % self.group_size:
            raise QuantGPTError(f"activation group size {self.group_size} does not divide the input width {x.shape[-1]}")
        group = {"tensor": -1, "token": 0}.get(self.granularity, self.group_size)
        return dynamic_act_ste(x, self.k, group)

    def extra_repr(self):
        g = f", group_size={self.group_size}" if self.group_size else ""
        return f"bits={self.bits}, granularity={self.granularity}{g}, learned_clip={self.learned_clip}"
