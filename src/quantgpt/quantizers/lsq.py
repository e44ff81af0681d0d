"""Learned step size quantization (Esser et al. 2020), the paper's baseline.

w_q = s * round(clip(w / s, -Q_N, Q_P)) with Q_N = 2^(b-1), Q_P = 2^(b-1) - 1; s starts at
2 * mean|w| / sqrt(Q_P) and its gradient is scaled by 1 / sqrt(n * Q_P), n the weights sharing s.
Backward: dL/dw = g inside the range; dL/ds = gscale * sum g * (round(v) - v inside, -Q_N below, Q_P above).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import WeightQuantizer


class LSQFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w2, s, qn: int, qp: int, gscale: float):
        s = s.clamp_min(1e-12)
        ctx.save_for_backward(w2, s)
        ctx.qn, ctx.qp, ctx.gscale = qn, qp, gscale
        return torch.round((w2 / s).clamp(-qn, qp)) * s

    @staticmethod
    def backward(ctx, g):
        w2, s = ctx.saved_tensors
        qn, qp = ctx.qn, ctx.qp
        v = w2 / s
        lo, hi = v < -qn, v > qp
        inside = ~(lo | hi)
        ds_elem = torch.where(inside, torch.round(v) - v, torch.where(lo, torch.full_like(v, -qn), torch.full_like(v, qp)))
        ds = (g * ds_elem).sum(1, keepdim=True) * ctx.gscale
        return g * inside, ds, None, None, None


class LSQQuantizer(WeightQuantizer):
    family = "lsq"

    def __init__(self, bits, shape, granularity="tensor", group_size=None, ragged=False):
        super().__init__(bits, shape, granularity, group_size, ragged)
        self.qn, self.qp = 2 ** (self.bits - 1), 2 ** (self.bits - 1) - 1
        self.step = nn.Parameter(torch.ones(self.rows, 1))
        cols = self.to_rows(torch.empty(self.shape, device="meta")).shape[1]  # weights sharing one step
        self.gscale = 1.0 / math.sqrt(cols * self.qp)

    @torch.no_grad()
    def initialize(self, w):
        w2 = self.to_rows(w).float()
        self.step.copy_(2 * w2.abs().mean(1, keepdim=True) / math.sqrt(self.qp))

    def quantize_rows(self, w2):
        return LSQFunction.apply(w2, self.step.to(w2.dtype), self.qn, self.qp, self.gscale)

    def encode_rows(self, w2):
        s = self.step.float().clamp_min(1e-12)
        codes = torch.round((w2.float() / s).clamp(-self.qn, self.qp))
        return codes.to(torch.int8), s, None, -self.qn, self.qp
