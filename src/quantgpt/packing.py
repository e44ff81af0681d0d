"""Dense bit packing of integer codes: 2, 3, 4 and 8 bits per value (3-bit really 3: 8 values in 3 bytes).

Values are unsigned (``0 .. 2^b - 1``); the flattened tensor is padded to a multiple of 8 values, every 8
values form one little-endian word of ``8 * b`` bits, stored as ``b`` bytes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

PACK_BITS = (2, 3, 4, 8)


def packed_nbytes(numel: int, bits: int) -> int:
    return numel if bits == 8 else -(-numel // 8) * bits


def pack(values: torch.Tensor, bits: int) -> torch.Tensor:
    """``values`` (any shape, integers in ``[0, 2^bits)``) -> 1-D uint8 of ``packed_nbytes`` bytes."""
    if bits not in PACK_BITS:
        raise ValueError(f"cannot pack {bits}-bit values (supported: {PACK_BITS})")
    flat = values.reshape(-1)
    if bits == 8:
        return flat.to(torch.uint8).clone()
    n = flat.numel()
    v = F.pad(flat.to(torch.int32), (0, (-n) % 8)).reshape(-1, 8)
    shifts = torch.arange(8, dtype=torch.int32, device=v.device) * bits
    word = (v << shifts).sum(1, dtype=torch.int32)  # at most 24 bits
    byte_shifts = torch.arange(bits, dtype=torch.int32, device=v.device) * 8
    return ((word.unsqueeze(1) >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)


def unpack(data: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The inverse of :func:`pack`: the first ``numel`` values as int32."""
    if bits not in PACK_BITS:
        raise ValueError(f"cannot unpack {bits}-bit values (supported: {PACK_BITS})")
    if data.numel() != packed_nbytes(numel, bits):
        raise ValueError(f"packed data has {data.numel()} bytes, expected {packed_nbytes(numel, bits)}")
    if bits == 8:
        return data.to(torch.int32)
    b = data.reshape(-1, bits).to(torch.int32)
    byte_shifts = torch.arange(bits, dtype=torch.int32, device=data.device) * 8
    word = (b << byte_shifts).sum(1, dtype=torch.int32)
    shifts = torch.arange(8, dtype=torch.int32, device=data.device) * bits
    return ((word.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)[:numel]
