"""Loss-aware quantization (Hou & Kwok, ICLR 2018), the paper's baseline.

LAQ picks the quantized weights that minimise a second-order model of the loss, whose curvature is the
diagonal d = sqrt(v_hat) + eps of Adam's second moments: min_{alpha, b} sum_i d_i (w_i - alpha b_i)^2 with
b on the symmetric grid {-k..k}/k. We solve it by alternating b = Q(w/alpha) and
alpha = sum(d w b) / sum(d b^2) (a few steps, warm-started from the last alpha). The trainer copies the
optimizer's second moments into ``curvature`` after every step (``set_curvature``); until then d = 1 and
LAQ is the closed-form least-squares scaling. Backward: the gradient at w_q updates the float weights
(straight-through), as in the LAQ paper.
"""
from __future__ import annotations

import torch

from .base import WeightQuantizer, initial_clip, sym_levels


class STEFunction(torch.autograd.Function):
    """Returns ``wq`` in the forward and passes the gradient unchanged to ``w`` in the backward."""

    @staticmethod
    def forward(ctx, w, wq):
        return wq

    @staticmethod
    def backward(ctx, g):
        return g, None


class LAQQuantizer(WeightQuantizer):
    family = "laq"

    def __init__(self, bits, shape, granularity="tensor", group_size=None, ragged=False, iters: int = 2):
        super().__init__(bits, shape, granularity, group_size, ragged)
        self.k = sym_levels(self.bits)
        self.iters = iters
        self.register_buffer("alpha", torch.ones(self.rows, 1))
        self.register_buffer("curvature", torch.ones(0), persistent=False)  # empty = all ones

    @torch.no_grad()
    def set_curvature(self, exp_avg_sq: torch.Tensor, step: int, beta2: float, eps: float = 1e-8) -> None:
        v_hat = exp_avg_sq / (1 - beta2**step)
        self.curvature = (v_hat.sqrt() + eps).reshape(self.shape).to(self.alpha.device)

    @torch.no_grad()
    def _solve(self, w2):
        d = self.to_rows(self.curvature) if self.curvature.numel() else torch.ones_like(w2)
        alpha = self.alpha.clamp_min(1e-12)
        for _ in range(self.iters):
            b = torch.round(self.k * (w2 / alpha).clamp(-1, 1)) / self.k
            num, den = (d * w2 * b).sum(1, keepdim=True), (d * b * b).sum(1, keepdim=True)
            alpha = torch.where(den > 0, num / den.clamp_min(1e-30), alpha).clamp_min(1e-12)
        if self.training:
            self.alpha.copy_(alpha)
        return alpha

    @torch.no_grad()
    def initialize(self, w):
        w2 = self.to_rows(w).float()
        self.alpha.copy_(initial_clip(w2, self.k))
        was = self.training
        self.train()
        for _ in range(10):
            self._solve(w2)
        self.train(was)

    def quantize_rows(self, w2):
        alpha = self._solve(w2.detach().float()).to(w2.dtype)
        wq = alpha * torch.round(self.k * (w2.detach() / alpha).clamp(-1, 1)) / self.k
        return STEFunction.apply(w2, wq)

    def encode_rows(self, w2):
        alpha = self.alpha.float().clamp_min(1e-12)
        codes = torch.round(self.k * (w2.float() / alpha).clamp(-1, 1))
        return codes.to(torch.int8), alpha / self.k, None, -self.k, self.k
