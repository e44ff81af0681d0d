"""PACT applied to weights (Choi et al. 2018), the paper's baseline: a learned clip value alpha.

Forward as mds but alpha is a free parameter. Backward (PACT's rule): the rounding is straight-through,
and only clipped weights move alpha: dL/dalpha = sum g * sign(w) * 1[|w| > alpha]; dL/dw = g * 1[|w| <= alpha].
"""
from __future__ import annotations

import torch
from torch import nn

from .base import WeightQuantizer, initial_clip, sym_levels


class PACTFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w2, alpha, k: int):
        alpha = alpha.clamp_min(1e-12)
        ctx.save_for_backward(w2, alpha)
        return alpha * torch.round(k * (w2 / alpha).clamp(-1, 1)) / k

    @staticmethod
    def backward(ctx, g):
        w2, alpha = ctx.saved_tensors
        inside = w2.abs() <= alpha
        dalpha = (g * torch.sign(w2) * ~inside).sum(1, keepdim=True)
        return g * inside, dalpha, None


class PACTQuantizer(WeightQuantizer):
    family = "pact"

    def __init__(self, bits, shape, granularity="tensor", group_size=None, init_gamma=None, ragged=False):
        super().__init__(bits, shape, granularity, group_size, ragged)
        self.k = sym_levels(self.bits)
        self.init_gamma = init_gamma
        self.alpha = nn.Parameter(torch.ones(self.rows, 1))

    @torch.no_grad()
    def initialize(self, w):
        # Same starting clip as mds (gamma0 * mean|w|), so that the two differ only in how alpha is learned.
        self.alpha.copy_(initial_clip(self.to_rows(w), self.k, self.init_gamma))

    def quantize_rows(self, w2):
        return PACTFunction.apply(w2, self.alpha.to(w2.dtype), self.k)

    def encode_rows(self, w2):
        alpha = self.alpha.float().clamp_min(1e-12)
        codes = torch.round(self.k * (w2.float() / alpha).clamp(-1, 1))
        return codes.to(torch.int8), alpha / self.k, None, -self.k, self.k
