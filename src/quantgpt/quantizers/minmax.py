"""Static min-max quantization: round-to-nearest on a grid spanning the weights' range.

Asymmetric: scale = (max - min) / (2^b - 1), zero = round(-min / scale), codes in [0, 2^b - 1].
Symmetric: scale = max|w| / k, codes in [-k, k], k = 2^(b-1) - 1.
The scale and zero point are buffers set once by ``initialize`` (round-to-nearest) or by GPTQ; they do
not follow later changes of the weights. Backward is straight-through.
"""
from __future__ import annotations

import torch

from .base import WeightQuantizer, sym_levels


class FakeQuantFunction(torch.autograd.Function):
    """(clamp(round(w / scale) + zero, qmin, qmax) - zero) * scale with a straight-through backward."""

    @staticmethod
    def forward(ctx, w2, scale, zero, qmin: int, qmax: int):
        return (torch.clamp(torch.round(w2 / scale) + zero, qmin, qmax) - zero) * scale

    @staticmethod
    def backward(ctx, g):
        return g, None, None, None, None


@torch.no_grad()
def minmax_params(w2: torch.Tensor, bits: int, symmetric: bool):
    """Scale and zero point of each row of ``w2`` (shape ``(rows, 1)``) and the code range."""
    w2 = w2.float()
    if symmetric:
        k = sym_levels(bits)
        scale = (w2.abs().amax(1, keepdim=True) / k).clamp_min(1e-12)
        return scale, torch.zeros_like(scale), -k, k
    qmax = 2**bits - 1
    lo = w2.amin(1, keepdim=True).clamp(max=0)
    hi = w2.amax(1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / qmax).clamp_min(1e-12)
    zero = torch.round(-lo / scale).clamp(0, qmax)
    return scale, zero, 0, qmax


class MinMaxQuantizer(WeightQuantizer):
    family = "minmax"

    def __init__(self, bits, shape, granularity="channel", group_size=None, symmetric=False, ragged=False):
        super().__init__(bits, shape, granularity, group_size, ragged)
        self.symmetric = symmetric
        self.qmin, self.qmax = (-sym_levels(self.bits), sym_levels(self.bits)) if symmetric else (0, 2**self.bits - 1)
        self.register_buffer("scale", torch.ones(self.rows, 1))
        self.register_buffer("zero", torch.zeros(self.rows, 1))

    @torch.no_grad()
    def initialize(self, w):
        self.set_params(*minmax_params(self.to_rows(w), self.bits, self.symmetric)[:2])

    @torch.no_grad()
    def set_params(self, scale, zero):
        self.scale.copy_(scale.reshape(self.rows, 1))
        self.zero.copy_(zero.reshape(self.rows, 1))

    def quantize_rows(self, w2):
        return FakeQuantFunction.apply(w2, self.scale.to(w2.dtype), self.zero.to(w2.dtype), self.qmin, self.qmax)

    def encode_rows(self, w2):
        codes = torch.clamp(torch.round(w2.float() / self.scale) + self.zero, self.qmin, self.qmax)
        return codes.to(torch.int16 if self.qmax > 127 else torch.int8), self.scale.float(), \
            (None if self.symmetric else self.zero.float()), self.qmin, self.qmax
