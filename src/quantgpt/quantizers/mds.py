"""Module-wise dynamic scaling (Tao et al. 2022, Sec. 3.2): the clip value follows the weights.

alpha = gamma * mean|w| (one learnable gamma per matrix, or per row / group as an extension);
u = clip(w / alpha, -1, 1); w_q = alpha * Q(u) with Q the rounding to the grid: the paper's symmetric
``sym`` grid round(k u) / k, k = 2^(b-1) - 1 (ternary at 2 bits), or the ``full`` grid of all 2^b codes
(floor(k u) + 1/2) / k, k = 2^(b-1) (see ``base.grid_k``).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import WeightQuantizer, grid_encode, grid_k, grid_round, search_clip_factor


class MDSFunction(torch.autograd.Function):
    """Forward as above, on the ``(rows, cols)`` view with ``gamma`` of shape ``(rows, 1)``.

    Backward (straight-through for the rounding):
      dL/dw     = g * 1[|u| <= 1]                        (+ dL/dalpha * gamma * sign(w) / cols if mean_grad)
      dL/dalpha = sum_row g * (Q(u) - u  if |u| <= 1 else Q(u))   (Q(u) = sign(w) outside, on the sym grid)
      dL/dgamma = mean|w| * dL/dalpha
    """

    @staticmethod
    def forward(ctx, w2, gamma, k: int, mean_grad: bool, grid: str = "sym"):
        m = w2.abs().mean(1, keepdim=True)
        alpha = (gamma * m).clamp_min(1e-12)
        q = grid_round((w2 / alpha).clamp(-1, 1), k, grid)
        ctx.save_for_backward(w2, gamma)
        ctx.k, ctx.mean_grad, ctx.grid = k, mean_grad, grid
        return alpha * q

    @staticmethod
    def backward(ctx, g):
        w2, gamma = ctx.saved_tensors
        k = ctx.k
        m = w2.abs().mean(1, keepdim=True)
        alpha = (gamma * m).clamp_min(1e-12)
        u = w2 / alpha
        inside = u.abs() <= 1
        q = grid_round(u.clamp(-1, 1), k, ctx.grid)
        dalpha = (g * torch.where(inside, q - u, q)).sum(1, keepdim=True)
        dw = g * inside
        if ctx.mean_grad:
            dw = dw + dalpha * gamma * torch.sign(w2) / w2.shape[1]
        return dw, (m * dalpha).to(gamma.dtype), None, None, None


class MDSQuantizer(WeightQuantizer):
    family = "mds"

    def __init__(self, bits, shape, granularity="tensor", group_size=None, mean_grad=False, init_gamma=None, ragged=False,
                 grid="sym"):
        super().__init__(bits, shape, granularity, group_size, ragged)
        self.grid = grid
        self.k = grid_k(self.bits, grid)
        self.mean_grad = mean_grad
        self.init_gamma = init_gamma
        self.gamma = nn.Parameter(torch.ones(self.rows, 1))

    @torch.no_grad()
    def initialize(self, w):
        if self.init_gamma is not None:
            self.gamma.fill_(self.init_gamma)
        else:
            self.gamma.copy_(search_clip_factor(self.to_rows(w), self.k, per_row=self.rows > 1, grid=self.grid))

    def alpha(self, w2):
        return (self.gamma * w2.abs().mean(1, keepdim=True)).clamp_min(1e-12)

    def quantize_rows(self, w2):
        return MDSFunction.apply(w2, self.gamma.to(w2.dtype), self.k, self.mean_grad, self.grid)

    def encode_rows(self, w2):
        alpha = self.alpha(w2.float())
        return grid_encode(w2, alpha, self.k, self.grid)
