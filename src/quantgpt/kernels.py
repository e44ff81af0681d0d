"""A Triton matmul that reads packed low-bit weights: ``y = x @ dequantize(W).T (* row_scale) + bias`` without
a float copy of ``W``. Each program loads its tile of packed codes, unpacks and dequantizes it in registers
(codes, scales and zero points exactly as :meth:`packed.PackedWeight.dequantize` combines them) and feeds it to
``tl.dot`` with float32 accumulation. Every layout a packed checkpoint holds is read: 2, 3, 4 and 8-bit codes;
tensor, channel and (ragged) group scales; fp16 scales with or without zero points, or 8-bit scale codes with
their per-row factors and the asym grid's centre codes.

Code ``e`` of a matrix (row-major, ``e = n * K + k``) occupies bits ``[e * b, e * b + b)`` of the packed bytes
read as one little-endian stream (packing.pack's 8-value words are exactly that), so a 3-bit code may straddle
two bytes and the others never do.

CUDA tensors run the compiled kernel. In a process started with TRITON_INTERPRET=1, CPU tensors run the same kernel
in Triton's interpreter (slow: it is how the kernel's arithmetic is tested on machines without a GPU)."""
from __future__ import annotations

import os

import torch

from .errors import QuantGPTError

try:
    import triton
    import triton.language as tl
except ImportError:  # the kernel is optional: packed models run without it (PackedWeight.dequantize)
    triton = tl = None


def _body(x_ptr, q_ptr, scale_ptr, zero_ptr, factor_ptr, zfactor_ptr, row_scale_ptr, bias_ptr, y_ptr,
          M, N, K, stride_xm, stride_ym, groups_per_row, group_size, factor_stride, zero_stride,
          BITS: tl.constexpr, QMIN: tl.constexpr, SCALE_CODES: tl.constexpr, ZERO: tl.constexpr,
          HAS_ROW_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    rows = offs_n.to(tl.int64)
    if SCALE_CODES:  # one factor per matrix row (or one for the matrix: factor_stride 0)
        factor = tl.load(factor_ptr + rows * factor_stride, mask=mask_n, other=1.0).to(tl.float32)
        if ZERO == 2:
            zfactor = tl.load(zfactor_ptr + rows * factor_stride, mask=mask_n, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :],
                    other=0.0)
        wmask = mask_k[:, None] & mask_n[None, :]  # the tile is (BLOCK_K, BLOCK_N): W transposed
        bit = (rows[None, :] * K + offs_k[:, None]) * BITS
        shift = (bit % 8).to(tl.int32)
        word = tl.load(q_ptr + bit // 8, mask=wmask, other=0).to(tl.int32)
        if 8 % BITS != 0:  # the code runs into the next byte
            spill = wmask & (shift > 8 - BITS)
            word = word | (tl.load(q_ptr + bit // 8 + 1, mask=spill, other=0).to(tl.int32) << 8)
        code = ((word >> shift) & ((1 << BITS) - 1)) + QMIN
        r = rows[None, :] * groups_per_row + offs_k[:, None] // group_size  # the scale's row (tensor: 0)
        if SCALE_CODES:
            scale = tl.load(scale_ptr + r, mask=wmask, other=1).to(tl.float32) * factor[None, :]
        else:
            scale = tl.load(scale_ptr + r, mask=wmask, other=1.0).to(tl.float32)
        if ZERO == 1:  # stored, a row's or one for the matrix (zero_stride 0)
            zero = tl.load(zero_ptr + r * zero_stride, mask=wmask, other=0.0).to(tl.float32)
        if ZERO == 2:  # the centre's code x factor; zero = -1/2 - centre / scale, as float_scales makes it
            zero = -0.5 - (tl.load(zero_ptr + r, mask=wmask, other=0).to(tl.float32) * zfactor[None, :]) / scale
        if ZERO != 0:
            w = (code.to(tl.float32) - zero) * scale
        else:
            w = code.to(tl.float32) * scale
        w = tl.where(wmask, w, 0.0).to(x.dtype)  # masked lanes (scale 1, codes 0) add nothing
        acc += tl.dot(x, w, input_precision=PRECISION)
    if HAS_ROW_SCALE:
        acc = acc * tl.load(row_scale_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


_packed_matmul = triton.jit(_body) if triton is not None else None
# Triton decides at its import whether kernels run compiled or in its interpreter (TRITON_INTERPRET=1), for the
# whole process: the interpreter is what runs the kernel on CPU tensors
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(device: torch.device) -> None:
    """A one-line error unless the kernel can run on ``device``."""
    if _packed_matmul is None:
        raise QuantGPTError("the packed-weight kernel needs Triton (pip install triton)")
    if device.type != "cuda" and not INTERPRET:
        raise QuantGPTError(f"the packed-weight kernel runs on a CUDA device, not {device.type} (on the CPU only in "
                            "Triton's interpreter, TRITON_INTERPRET=1, for testing)")


def _layout(packed, scale: torch.Tensor) -> tuple[int, int]:
    """``(groups_per_row, group_size)``: element (n, k)'s scale is number ``n * groups_per_row + k // group_size`` of
    the stored ones. As PackedWeight.float_scales reads them, a row's scales are the next ones (one a row under
    channel granularity) and a single one serves the whole matrix."""
    out_f, in_f = packed.shape
    return (0 if scale.numel() == 1 else scale.numel() // out_f), packed.group_size or in_f


def _blocks(m: int, k: int) -> tuple[int, int, int]:
    """Tile sizes: few rows of ``x`` (generation) take the smallest tile tl.dot allows and narrower columns,
    so that a small matrix still spreads over many programs."""
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64
    block_n = 32 if m <= 16 else 64
    block_k = 64 if k >= 64 else 32 if k >= 32 else 16
    return block_m, block_n, block_k


def packed_linear(x: torch.Tensor, packed, bias: torch.Tensor | None = None,
                  row_scale: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.linear(x, packed.dequantize(dtype) * row_scale[:, None], bias)`` from the packed codes.

    ``packed``: a :class:`packed.PackedWeight`. ``dtype`` (default ``x.dtype``): the dtype both operands of the
    product take, as the reference path casts the dequantized weight (bf16 or fp16 use the tensor cores; float32
    multiplies in full precision, not TF32); the output has it too. Accumulation is in float32."""
    check_device(x.device)
    out_f, in_f = packed.shape
    if x.shape[-1] != in_f:
        raise ValueError(f"input has {x.shape[-1]} features, the packed weight {in_f}")
    dtype = dtype or x.dtype
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_f).to(dtype).contiguous()
    m = x2.shape[0]
    y = torch.empty(m, out_f, dtype=dtype, device=x.device)
    if m == 0:
        return y.reshape(*lead, out_f)
    codes = bool(packed.group_code_names)
    scale, factor = (packed.scale_code, packed.scale_factor) if codes else (packed.scale, None)
    zero, zfactor, zero_kind = packed.zero, None, 0 if packed.zero is None else 1
    if "center_code" in packed.group_code_names:
        zero, zfactor, zero_kind = packed.center_code, packed.center_factor, 2
    groups_per_row, group_size = _layout(packed, scale)
    block_m, block_n, block_k = _blocks(m, in_f)
    grid = (-(-m // block_m), -(-out_f // block_n))
    dummy = y  # a pointer for the arguments a layout does not use (never read)
    _packed_matmul[grid](
        x2, packed.qweight, scale, zero if zero is not None else dummy, factor if codes else dummy,
        zfactor if zfactor is not None else dummy, row_scale if row_scale is not None else dummy,
        bias if bias is not None else dummy, y,
        m, out_f, in_f, x2.stride(0), y.stride(0), groups_per_row, group_size,
        int(codes and factor.numel() > 1), int(zero is not None and zero.numel() > 1),
        BITS=packed.bits, QMIN=packed.qmin, SCALE_CODES=codes, ZERO=zero_kind,
        HAS_ROW_SCALE=row_scale is not None, HAS_BIAS=bias is not None,
        PRECISION="ieee" if dtype == torch.float32 else None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    return y.reshape(*lead, out_f)
