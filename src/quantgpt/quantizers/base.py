"""What every weight quantizer shares: the scale layout and the encode/dequantize contract.

A weight matrix is always seen as ``(out_features, in_features)``. ``granularity`` decides which
elements share one scale; we reshape the matrix to ``(rows, cols)`` so that each row of the view shares
one scale: ``tensor`` -> one row, ``channel`` -> one row per output feature, ``group`` -> ``group_size``
consecutive input columns of an output row. Quantizers then work on that 2-D view with ``(rows, 1)``
parameters, so every family supports every granularity with the same code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import check_grid
from ..errors import QuantGPTError


def scale_rows(shape: tuple[int, int], granularity: str, group_size: int | None, ragged: bool = False) -> int:
    """Number of scales. With ``ragged`` the last group of a row may be shorter than ``group_size``."""
    out_f, in_f = shape
    if granularity == "tensor":
        return 1
    if granularity == "channel":
        return out_f
    if granularity == "group":
        if group_size is None or group_size <= 0:
            raise QuantGPTError(f"bad group size {group_size}")
        if in_f % group_size and not ragged:
            divisors = [d for d in range(8, in_f + 1, 8) if in_f % d == 0][:8]
            raise QuantGPTError(
                f"group size {group_size} does not divide the input width {in_f} of a {out_f}x{in_f} matrix: "
                f"pick a divisor of {in_f} (e.g. {', '.join(map(str, divisors))}) or allow a shorter last group "
                f"with --ragged-groups"
            )
        return out_f * -(-in_f // group_size)
    raise QuantGPTError(f"unknown granularity {granularity!r}")


def pad_to_groups(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """Zero-pad the input dimension of ``(out, in)`` to a multiple of ``group_size`` (ragged last group)."""
    pad = (-w.shape[1]) % group_size if group_size else 0
    return torch.nn.functional.pad(w, (0, pad)) if pad else w


@dataclass
class Encoded:
    """Integer codes of a quantized matrix and how to turn them back into floats.

    ``codes`` has the matrix's shape ``(out, in)``; ``scale`` and ``zero`` have shape ``(rows, 1)`` in the
    quantizer's row layout. ``dequantize`` is ``(codes - zero) * scale`` (``zero`` is 0 when symmetric).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    qmin: int
    qmax: int
    granularity: str
    group_size: int | None
    # 8-bit scales (scale_bits 8): {"scale_code": uint8 (rows, 1), "scale_factor": (out, 1), and on the asym grid
    # "center_code": int8 (rows, 1), "center_factor": (out, 1)}, what a packed checkpoint stores in place of the
    # float scale and zero point; ``scale`` and ``zero`` are then the values these codes give
    group_codes: dict | None = None

    def dequantize(self) -> torch.Tensor:
        rows = self.scale.shape[0]
        c = pad_to_groups(self.codes, self.group_size).reshape(rows, -1).to(self.scale.dtype)
        if self.zero is not None:
            c = c - self.zero
        return (c * self.scale).reshape(self.codes.shape[0], -1)[:, : self.codes.shape[1]]


class WeightQuantizer(nn.Module):
    """Base class: subclasses implement ``quantize_rows`` (forward on the 2-D view) and ``encode_rows``."""

    family = "base"
    symmetric = True
    weight_unit_params: tuple[str, ...] = ()  # parameters in the weights' units: they train at the weights' lr

    def __init__(self, bits: int, shape: tuple[int, int], granularity: str = "tensor", group_size: int | None = None,
                 ragged: bool = False):
        super().__init__()
        self.bits = int(bits)
        self.shape = tuple(shape)
        self.granularity = granularity
        self.group_size = group_size if granularity == "group" else None
        self.rows = scale_rows(self.shape, granularity, self.group_size, ragged)

    def to_rows(self, w: torch.Tensor) -> torch.Tensor:
        """The ``(rows, cols)`` view; a ragged last group is zero-padded (zeros quantize to zero exactly)."""
        if tuple(w.shape) != self.shape:
            raise ValueError(f"quantizer built for shape {self.shape} got a weight of shape {tuple(w.shape)}")
        return pad_to_groups(w, self.group_size).reshape(self.rows, -1)

    def from_rows(self, w2: torch.Tensor) -> torch.Tensor:
        out_f, in_f = self.shape
        return w2.reshape(out_f, -1)[:, :in_f]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.from_rows(self.quantize_rows(self.to_rows(w)))

    @torch.no_grad()
    def encode(self, w: torch.Tensor) -> Encoded:
        codes, scale, zero, qmin, qmax = self.encode_rows(self.to_rows(w))
        return Encoded(self.from_rows(codes), scale, zero, qmin, qmax, self.granularity, self.group_size)

    @torch.no_grad()
    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """The integer codes of ``encode`` alone (int8, ``(out, in)``), without what only a packed file needs (mds's
        8-bit scale codes): what the training-time trackers read every step (flips.py, freeze.py)."""
        return self.from_rows(self.encode_rows(self.to_rows(w))[0])

    @torch.no_grad()
    def initialize(self, w: torch.Tensor) -> None:
        """Set the quantizer's parameters from the weights it will quantize (called once, at conversion)."""

    def quantize_rows(self, w2: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_rows(self, w2: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        grid = getattr(self, "grid", "sym")  # mds and pact have a choice of rounding grid
        return f"bits={self.bits}, granularity={self.granularity}{g}" + (f", grid={grid}" if grid != "sym" else "")


def group_param_codes(x: torch.Tensor, groups_per_row: int, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit codes of per-group values ``x`` (``(rows, 1)``, ``groups_per_row`` consecutive rows making one output
    row of the matrix) and one factor per output row (``(out, 1)``): ``x ~ code * factor``. Unsigned (a scale,
    positive): codes 1..255, factor max / 255, so no scale becomes 0; signed (the asym grid's centre): codes
    -127..127, factor max|x| / 127. The same double quantization of scales as QLoRA's and llama.cpp's k-quants."""
    x = x.reshape(-1, groups_per_row)
    top = 255 if not signed else 127
    factor = (x.abs() if signed else x).amax(1, keepdim=True).clamp_min(1e-12) / top
    codes = torch.round(x / factor).clamp(-top if signed else 1, top)
    return codes.reshape(-1, 1), factor


def quantize_group_params(x: torch.Tensor, groups_per_row: int, signed: bool) -> torch.Tensor:
    """``x`` rounded to its 8-bit codes (:func:`group_param_codes`), same shape; the factor is not differentiated."""
    codes, factor = group_param_codes(x.detach(), groups_per_row, signed)
    return (codes.reshape(-1, groups_per_row) * factor).reshape(x.shape).to(x.dtype)


def sym_levels(bits: int) -> int:
    """k = 2^(b-1) - 1: a symmetric grid {-k..k}/k; 2 bits give exactly the ternary grid {-1, 0, 1}."""
    return 2 ** (bits - 1) - 1


def grid_k(bits: int, grid: str) -> int:
    """The grid's denominator: ``sym`` (the paper's) has 2k+1 = 2^b - 1 levels {-k..k}/k, k = 2^(b-1) - 1;
    ``full`` uses all 2^b codes, levels (c + 1/2)/k for c in {-k..k-1}, k = 2^(b-1) (at 2 bits
    {-3/4, -1/4, 1/4, 3/4}: no zero level, but a fourth level ternary leaves unused). ``asym`` is the full
    grid about a learned centre of each scale group (the quantizer subtracts the centre first)."""
    return sym_levels(bits) if check_grid(grid) == "sym" else 2 ** (bits - 1)


def grid_codes(u: torch.Tensor, k: int, grid: str) -> torch.Tensor:
    """Integer codes (as floats) of ``u`` in [-1, 1]: sym -> round(k u) in [-k, k]; full (and asym, whose ``u`` is
    already centred) -> floor(k u) in [-k, k-1]."""
    if grid == "sym":
        return torch.round(k * u)
    return torch.floor(k * u).clamp(-k, k - 1)


def grid_round(u: torch.Tensor, k: int, grid: str = "sym") -> torch.Tensor:
    """The nearest grid level of ``u`` in [-1, 1] (a value in [-1, 1])."""
    c = grid_codes(u, k, grid)
    return c / k if grid == "sym" else (c + 0.5) / k


def grid_encode(w2: torch.Tensor, alpha: torch.Tensor, k: int, grid: str, center: torch.Tensor | None = None):
    """``encode_rows``'s tuple for clip ``alpha`` on ``grid``: int8 codes of :func:`grid_codes`, scale alpha / k,
    zero point (None on the sym grid, one -1/2 on the full grid, -1/2 - center / scale per row on the asym grid),
    qmin, qmax; value = (code - zero) * scale."""
    c = w2.float() if center is None else w2.float() - center
    codes = grid_codes((c / alpha).clamp(-1, 1), k, grid).to(torch.int8)
    scale = alpha / k
    if grid == "sym":
        return codes, scale, None, -k, k
    zero = torch.full((1, 1), -0.5, dtype=alpha.dtype, device=alpha.device) if center is None else -0.5 - center / scale
    return codes, scale, zero, -k, k - 1


@torch.no_grad()
def search_clip_factor(w2: torch.Tensor, k: int, per_row: bool, n_grid: int = 20, max_elems: int = 1 << 20,
                       grid: str = "sym") -> torch.Tensor:
    """The factor gamma that minimises ||w - alpha*Q(clip(w/alpha))||^2 with alpha = gamma*mean|w|, Q the
    rounding to ``grid`` (:func:`grid_round`).

    Candidates are clip values from 1% of max|w| up to max|w| itself (no clipping): a coarse geometric grid
    of ``n_grid`` points, then as many again between the best one's neighbours, per row. This covers both
    ternary weights (best clip near 1.5 mean|w|) and 8-bit weights of heavy-tailed matrices (best clip near
    the maximum). A per-tensor search scores a fixed random subset of at most ``max_elems`` weights.
    On the ``asym`` grid, ``w2`` is already centred and one more candidate is the min-max fit, whose outer
    levels (k - 1/2) alpha / k land on the extremes: exact for weights that already lie on such a grid (a
    dequantized Q4_1 block at 4 bits). Returns ``(rows, 1)`` when ``per_row`` else ``(1, 1)``.
    """
    w2 = w2.float()
    if not per_row:
        w2 = w2.reshape(1, -1)
    m = w2.abs().mean(1, keepdim=True).clamp_min(1e-12)
    amax = w2.abs().amax(1, keepdim=True).clamp_min(1e-12)
    sample = w2
    if not per_row and w2.shape[1] > max_elems:
        g = torch.Generator(device="cpu").manual_seed(0)
        sample = w2[:, torch.randperm(w2.shape[1], generator=g)[:max_elems].to(w2.device)]

    def best_of(alphas):  # alphas: list of (rows, 1) candidates
        best_err = torch.full_like(m, float("inf"))
        best = alphas[-1].clone()
        for alpha in alphas:
            err = (sample - alpha * grid_round((sample / alpha).clamp(-1, 1), k, grid)).square().sum(1, keepdim=True)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, alpha, best)
        return best

    ratio = 100 ** (1 / (n_grid - 1))  # spacing of the coarse grid
    fit = [amax * (k / (k - 0.5))] if grid == "asym" else []
    coarse = best_of([amax * f for f in torch.logspace(-2, 0, n_grid).tolist()] + fit)
    lo, hi = coarse / ratio, torch.minimum(coarse * ratio, amax)
    fine = best_of([lo * (hi / lo) ** (j / (n_grid - 1)) for j in range(n_grid)] + [coarse])  # coarse: the fit if it won
    return fine / m


@torch.no_grad()
def initial_clip(w2: torch.Tensor, k: int, init_gamma: float | None = None, grid: str = "sym") -> torch.Tensor:
    """The starting clip value alpha = gamma * mean|w| of each row of ``w2`` (``(rows, 1)``), with gamma fixed
    or searched (:func:`search_clip_factor`)."""
    w2 = w2.float()
    m = w2.abs().mean(1, keepdim=True)
    if init_gamma is not None:
        return init_gamma * m
    return search_clip_factor(w2, k, per_row=w2.shape[0] > 1, grid=grid) * m
