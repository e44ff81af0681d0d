"""Module-wise dynamic scaling (Tao et al. 2022, Sec. 3.2): the clip value follows the weights.

alpha = gamma * mean|w| (one learnable gamma per matrix, or per row / group as an extension);
u = clip(w / alpha, -1, 1); w_q = alpha * Q(u) with Q the rounding to the grid: the paper's symmetric
``sym`` grid round(k u) / k, k = 2^(b-1) - 1 (ternary at 2 bits), or the ``full`` grid of all 2^b codes
(floor(k u) + 1/2) / k, k = 2^(b-1) (see ``base.grid_k``).

The ``asym`` grid (an extension) is the full grid about a learned centre b of each scale group:
alpha = gamma * mean|w - b|, u = clip((w - b) / alpha, -1, 1), w_q = b + alpha * Q(u). The scale still
follows the weights' spread; the centre is a weight-like parameter, set to the group's mid-range at the start.

``scale_bits=8`` (an extension; group scales only) stores each group's alpha (and centre) as an 8-bit code times
one fp16 factor per output row instead of as fp16: half the bits of the scales, so groups half as long at the
same storage. The forward uses the rounded alpha and centre; their gradients pass straight through the rounding.

``dynamic=False`` is the paper's "fixed alpha" ablation on any grid: mean|w - b| is frozen at its start value,
so alpha = gamma * m0 is a learned static clip (PACT's, in mds's units), and only the rule that makes the clip
follow the weights differs from mds.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import check_scale_bits
from .base import (WeightQuantizer, group_param_codes, grid_encode, grid_k, grid_round, quantize_group_params,
                   search_clip_factor)


class MDSFunction(torch.autograd.Function):
    """Forward as above, on the ``(rows, cols)`` view with ``gamma`` (and ``center``, or None) of shape ``(rows, 1)``.

    With ``m0`` given (static scaling) the mean is that fixed tensor, and the mean's gradient terms vanish.
    With ``scale_groups`` (groups per output row; 0: off) alpha is rounded to its 8-bit code
    (:func:`base.quantize_group_params`) and the formulas below use the rounded alpha; the rounding is straight-through
    (dL/dgamma = mean|c| * dL/dalpha with dL/dalpha taken at the rounded alpha). A rounded centre is the caller's
    (straight-through as well).

    Backward (straight-through for the rounding; c = w - b, b = 0 without a centre):
      dL/dw     = g * 1[|u| <= 1]                        (+ dL/dalpha * gamma * sign(c) / cols if mean_grad)
      dL/dalpha = sum_row g * (Q(u) - u  if |u| <= 1 else Q(u))   (Q(u) = sign(w) outside, on the sym grid)
      dL/dgamma = mean|c| * dL/dalpha
      dL/db     = sum_row g * 1[|u| > 1]    (inside, b's shift cancels: d(b + alpha Q((w-b)/alpha))/db = 1 - 1)
                                            (- dL/dalpha * gamma * mean_row sign(c) if mean_grad)
    """

    @staticmethod
    def forward(ctx, w2, gamma, k: int, mean_grad: bool, grid: str = "sym", center=None, m0=None, scale_groups: int = 0):
        c = w2 if center is None else w2 - center
        m = c.abs().mean(1, keepdim=True) if m0 is None else m0
        alpha = MDSFunction.clip(gamma, m, scale_groups)
        q = grid_round((c / alpha).clamp(-1, 1), k, grid)
        ctx.save_for_backward(w2, gamma, center, m0)
        ctx.k, ctx.mean_grad, ctx.grid, ctx.scale_groups = k, mean_grad and m0 is None, grid, scale_groups
        return alpha * q if center is None else alpha * q + center

    @staticmethod
    def clip(gamma, m, scale_groups: int):
        alpha = (gamma * m).clamp_min(1e-12)
        return quantize_group_params(alpha, scale_groups, signed=False) if scale_groups else alpha

    @staticmethod
    def backward(ctx, g):
        w2, gamma, center, m0 = ctx.saved_tensors
        k = ctx.k
        c = w2 if center is None else w2 - center
        m = c.abs().mean(1, keepdim=True) if m0 is None else m0
        alpha = MDSFunction.clip(gamma, m, ctx.scale_groups)
        u = c / alpha
        inside = u.abs() <= 1
        q = grid_round(u.clamp(-1, 1), k, ctx.grid)
        dalpha = (g * torch.where(inside, q - u, q)).sum(1, keepdim=True)
        dw = g * inside
        dcenter = None if center is None else (g * ~inside).sum(1, keepdim=True)
        if ctx.mean_grad:
            dw = dw + dalpha * gamma * torch.sign(c) / w2.shape[1]
            if center is not None:
                dcenter = dcenter - dalpha * gamma * torch.sign(c).mean(1, keepdim=True)
        return (dw, (m * dalpha).to(gamma.dtype), None, None, None, None if center is None else dcenter.to(center.dtype),
                None, None)


class MDSQuantizer(WeightQuantizer):
    family = "mds"
    weight_unit_params = ("center",)  # the asym grid's centres

    def __init__(self, bits, shape, granularity="tensor", group_size=None, mean_grad=False, init_gamma=None, ragged=False,
                 grid="sym", dynamic=True, scale_bits=16):
        super().__init__(bits, shape, granularity, group_size, ragged)
        check_scale_bits(scale_bits, "mds", granularity)
        self.scale_bits = scale_bits
        self.scale_groups = self.rows // self.shape[0] if scale_bits == 8 else 0  # groups per output row
        self.grid = grid
        self.k = grid_k(self.bits, grid)
        self.mean_grad = mean_grad
        self.init_gamma = init_gamma
        self.gamma = nn.Parameter(torch.ones(self.rows, 1))
        # the asym grid's centre; the trainer gives it the weights' learning rate (it is in the weights' units)
        self.center = nn.Parameter(torch.zeros(self.rows, 1)) if grid == "asym" else None
        # static scaling: mean|w - b| at the start, frozen (kept in training checkpoints)
        self.register_buffer("m0", None if dynamic else torch.ones(self.rows, 1))

    @torch.no_grad()
    def initialize(self, w):
        w2 = self.to_rows(w).float()
        if self.center is not None:
            self.center.copy_((w2.amax(1, keepdim=True) + w2.amin(1, keepdim=True)) / 2)
            w2 = w2 - self.center
        if self.m0 is not None:
            self.m0.copy_(w2.abs().mean(1, keepdim=True))
        if self.init_gamma is not None:
            self.gamma.fill_(self.init_gamma)
        else:
            self.gamma.copy_(search_clip_factor(w2, self.k, per_row=self.rows > 1, grid=self.grid))

    def rounded_center(self, dtype):
        """The asym grid's centres as the forward uses them: rounded to 8-bit codes under scale_bits 8
        (straight-through: the gradient reaches the centre unchanged)."""
        if self.center is None:
            return None
        b = self.center.to(dtype)
        return b + (quantize_group_params(b, self.scale_groups, signed=True) - b).detach() if self.scale_groups else b

    def centered(self, w2):
        b = self.rounded_center(w2.dtype)
        return w2 if b is None else w2 - b

    def alpha(self, w2):
        m = self.centered(w2).abs().mean(1, keepdim=True) if self.m0 is None else self.m0.to(w2.dtype)
        return MDSFunction.clip(self.gamma.to(w2.dtype), m, self.scale_groups)

    def quantize_rows(self, w2):
        m0 = None if self.m0 is None else self.m0.to(w2.dtype)
        return MDSFunction.apply(w2, self.gamma.to(w2.dtype), self.k, self.mean_grad, self.grid,
                                 self.rounded_center(w2.dtype), m0, self.scale_groups)

    def encode_rows(self, w2):
        w2 = w2.float()
        center = self.rounded_center(torch.float32)
        return grid_encode(w2, self.alpha(w2), self.k, self.grid, center)

    @torch.no_grad()
    def encode(self, w):
        enc = super().encode(w)
        if self.scale_groups:  # the codes the rounded alpha and centre came from, for the packed file
            w2 = self.to_rows(w).float()
            code, factor = group_param_codes(self.alpha(w2), self.scale_groups, signed=False)
            enc.group_codes = {"scale_code": code.to(torch.uint8), "scale_factor": factor / self.k}
            if self.center is not None:
                code, factor = group_param_codes(self.center.float(), self.scale_groups, signed=True)
                enc.group_codes.update(center_code=code.to(torch.int8), center_factor=factor)
        return enc
