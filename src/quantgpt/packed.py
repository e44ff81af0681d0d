"""Packed low-bit checkpoints (format ``quantgpt-packed`` version 1): integer codes densely packed in
``model.safetensors`` with fp16 scales (and zero points where asymmetric), or under 8-bit scales (a module's
``scale_bits`` 8) uint8 scale codes and int8 centre codes with one fp16 factor each per output row, every other
tensor in its original dtype, the ``transformers`` config and tokenizer files, and ``quantgpt.json`` with the format,
bits, per-module quantizer and layout, and the SHA-256 of every file. Loading gives a ``transformers`` model
whose quantized layers keep the packed codes and dequantize on the fly."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoint import atomic_dir, atomic_files, finish_loading, write_manifest
from .config import QuantConfig
from .convert import replace_module
from .errors import QuantGPTError
from .modules import QuantEmbedding, QuantLinear
from .packing import PACK_BITS, pack, packed_nbytes, unpack
from .quantizers.base import Encoded

FORMAT = "quantgpt-packed"
VERSION = 1
# the tensors of one quantized module, by suffix: codes, float scales and zero points, or 8-bit scales' codes
MODULE_TENSORS = ("qweight", "scale", "zero", "scale_code", "scale_factor", "center_code", "center_factor")


class PackedWeight(nn.Module):
    """A quantized ``(out, in)`` matrix as packed codes plus scales; ``dequantize()`` gives the floats. Under 8-bit
    scales (``group_codes``: the scale and centre codes and their per-row factors, as stored) ``scale`` is None and
    the float scales are made from the codes as the matrix is dequantized."""

    def __init__(self, qweight, scale, zero, bits: int, shape, qmin: int, granularity: str, group_size: int | None,
                 group_codes: dict | None = None):
        super().__init__()
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("zero", zero if zero is not None else None)
        for k, t in (group_codes or {}).items():
            self.register_buffer(k, t)
        self.group_code_names = tuple(group_codes or ())
        self.bits, self.shape, self.qmin = bits, tuple(shape), qmin
        self.granularity, self.group_size = granularity, group_size
        self.register_buffer("unpacked", None, persistent=False)  # the float32 matrix once unpack_once ran

    def unpack_once(self, dtype=torch.float32) -> None:
        """Dequantize now and keep the matrix in ``dtype`` (the model's compute dtype; moved with the module):
        every later forward reads it instead of unpacking the codes again. Generation, which runs the model once
        a token, then costs a float model's steps; the file stays packed."""
        self.unpacked = None
        self.unpacked = self.dequantize(dtype)

    def _apply(self, fn, recurse=True):
        """``model.to(dtype)`` and ``.half()`` move the scales (and zero points, and 8-bit scales' factors) to the
        new device but keep their stored dtype: cast to bfloat16, fp16 scales would lose 3 bits each and every
        weight would move off the saved grid. The unpacked copy, a compute tensor, follows the cast."""
        keep = {n: t for n, t in self._buffers.items() if t is not None and n != "unpacked" and t.is_floating_point()}
        super()._apply(fn, recurse)
        for n, t in keep.items():
            moved = self._buffers[n]
            if moved.dtype != t.dtype:
                self._buffers[n] = t.to(moved.device)
        return self

    def float_scales(self, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(scale, zero)`` as float32 ``(rows, 1)``: the stored fp16 ones, or under 8-bit scales scale = code x
        factor and, on the asym grid, centre = code x factor and zero = -1/2 - centre / scale. ``index`` (1-D):
        only those matrix rows' scales, in that order, selected before any arithmetic."""
        def rows(t):  # (matrix rows, values a row): a row's scales, codes, factors or zero points are the next ones
            if t is None or t.numel() == 1:  # one value for the whole matrix
                return t
            t = t.reshape(self.shape[0], -1)
            return t if index is None else t[index]

        zero = None if self.zero is None else rows(self.zero).float().reshape(-1, 1)
        if not self.group_code_names:
            return rows(self.scale).float().reshape(-1, 1), zero

        def values(kind):
            code, factor = getattr(self, f"{kind}_code"), getattr(self, f"{kind}_factor")
            return (rows(code).float() * rows(factor).float()).reshape(-1, 1)

        scale = values("scale")
        return scale, (-0.5 - values("center") / scale) if "center_code" in self.group_code_names else zero

    def dequantize(self, dtype=torch.float32) -> torch.Tensor:
        if self.unpacked is not None:
            return self.unpacked.to(dtype)
        n = self.shape[0] * self.shape[1]
        codes = (unpack(self.qweight, self.bits, n) + self.qmin).reshape(self.shape)
        enc = Encoded(codes, *self.float_scales(), 0, 0, self.granularity, self.group_size)
        return enc.dequantize().to(dtype)

    def dequantize_rows(self, index: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """``dequantize(dtype)[index]``, unpacking only those rows: an embedding lookup of a few tokens (each step
        of generation) then costs its rows, not the whole table. Rows start on a byte when a row's codes fill whole
        8-code words (columns a multiple of 8, as in every model here); otherwise the whole matrix is unpacked."""
        rows, cols = self.shape
        if self.unpacked is not None:  # the rows first: a cast of the whole table at every lookup is what unpack saves
            return self.unpacked[index].to(dtype)
        if cols % 8:
            return self.dequantize(dtype)[index]
        flat = index.reshape(-1)
        width = packed_nbytes(cols, self.bits)  # bytes a row
        codes = unpack(self.qweight.view(rows, width)[flat].reshape(-1), self.bits, flat.numel() * cols)
        codes = (codes + self.qmin).reshape(-1, cols)
        enc = Encoded(codes, *self.float_scales(flat), 0, 0, self.granularity, self.group_size)
        out = enc.dequantize().to(dtype)
        return out.reshape(*index.shape, cols)

    def nbytes(self) -> int:
        """The packed matrix's bytes: codes and scales, not the float copy of unpack_once."""
        return sum(t.numel() * t.element_size() for n, t in self.named_buffers() if n != "unpacked")

    def extra_repr(self):
        return f"bits={self.bits}, shape={self.shape}, granularity={self.granularity}, group_size={self.group_size}"


class PackedLinear(nn.Module):
    def __init__(self, packed: PackedWeight | None, bias, act_quantizer, tied: "PackedEmbedding | None" = None,
                 weight: nn.Parameter | None = None, row_scale: nn.Parameter | None = None, transposed: bool = False):
        super().__init__()
        self.packed = packed
        self.weight = weight  # only for layers whose weights stay float (activation-only quantization)
        self.bias = bias
        self.act_quantizer = act_quantizer
        self._tied = [tied] if tied is not None else []
        self.row_scale = row_scale  # a tied head's own row scales (QuantConfig.head_scale), stored as a float tensor
        self.transposed = transposed  # in place of GPT-2's Conv1D (its float weight is (in, out)): for --dequantize
        self.kernel = False  # multiply with kernels.packed_linear (Triton) from the packed codes: use_kernel

    def packed_source(self) -> PackedWeight | None:
        """The packed matrix this layer multiplies by: its own or, tied, its embedding's (None: float weights)."""
        return self._tied[0].packed if self._tied else self.packed

    def dequantized_weight(self, dtype=torch.float32):
        if self._tied:
            w = self._tied[0].packed.dequantize(dtype)
            return w * self.row_scale.to(dtype)[:, None] if self.row_scale is not None else w
        return self.weight.to(dtype) if self.packed is None else self.packed.dequantize(dtype)

    def forward(self, x):
        if self.act_quantizer is not None:
            x = self.act_quantizer(x)
        if self.kernel and self.packed_source().unpacked is None:
            from .kernels import packed_linear

            kind = x.device.type  # under autocast the product takes autocast's dtype, as F.linear's does
            dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
            return packed_linear(x, self.packed_source(), self.bias, self.row_scale, dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), self.bias)


class PackedEmbedding(nn.Module):
    def __init__(self, packed: PackedWeight, padding_idx=None, embed_scale=None, shared: bool = False):
        super().__init__()
        if shared:  # another module owns the buffers (BART's encoder/decoder share one table)
            self._shared = [packed]
        else:
            self.packed_weight = packed
            self._shared = []
        self.padding_idx, self.embed_scale = padding_idx, embed_scale

    @property
    def packed(self) -> PackedWeight:
        return self._shared[0] if self._shared else self.packed_weight

    def forward(self, ids):
        out = self.packed.dequantize_rows(ids)  # padding_idx only changes the gradient, and there is none here
        return out * self.embed_scale if self.embed_scale is not None else out


def _encoded_entries(model):
    """``(name, module, Encoded)`` for every module that owns a weight quantizer, embeddings first."""
    seen = {}
    out = []
    for name, m in model.named_modules():
        if isinstance(m, QuantEmbedding) or (isinstance(m, QuantLinear) and not m._tied and m.weight_quantizer is not None):
            w = m.weight if isinstance(m, QuantEmbedding) else m.weight_2d()
            key = id(m.weight)
            if key in seen:  # another embedding module sharing this table
                out.append((name, m, seen[key]))
                continue
            enc = m.weight_quantizer.encode(w.detach())
            seen[key] = name
            out.append((name, m, enc))
    return out


@torch.no_grad()
def save_packed(model, tokenizer, out, extra: dict | None = None, merge: bool = False) -> Path:
    """Write a model quantized by :func:`quantize_model` as a packed checkpoint."""
    cfg: QuantConfig = model.quant_config
    tensors, modules, owned = {}, {}, set()
    for name, m, enc in _encoded_entries(model):
        if isinstance(enc, str):  # shares the table of module ``enc``
            modules[name] = {"kind": "embedding", "shares": enc}
            owned.add(name + ".weight")
            continue
        bits = int(round(torch.log2(torch.tensor(float(enc.qmax - enc.qmin + 1))).ceil().item()))
        bits = next(b for b in PACK_BITS if b >= bits)
        tensors[f"{name}.qweight"] = pack((enc.codes.to(torch.int32) - enc.qmin).cpu(), bits)
        if enc.group_codes:  # 8-bit scales: their codes and factors; the zero point follows from the centre
            for k, t in enc.group_codes.items():
                tensors[f"{name}.{k}"] = (t if k.endswith("code") else t.to(torch.float16)).cpu().contiguous()
        else:
            tensors[f"{name}.scale"] = enc.scale.to(torch.float16).cpu().contiguous()
        if enc.zero is not None and not (enc.group_codes and "center_code" in enc.group_codes):
            tensors[f"{name}.zero"] = enc.zero.to(torch.float16).cpu().contiguous()
        modules[name] = {"kind": "embedding" if isinstance(m, QuantEmbedding) else "linear",
                         "quantizer": m.weight_quantizer.family, "bits": bits, "shape": list(enc.codes.shape),
                         "qmin": enc.qmin, "qmax": enc.qmax, "granularity": enc.granularity,
                         "group_size": enc.group_size, **({"scale_bits": 8} if enc.group_codes else {})}
        owned.add(name + ".weight")
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear) and m._tied:
            modules[name] = {"kind": "linear", "tied_to": next(n for n, x in model.named_modules() if x is m._tied[0])}
            owned.add(name + ".weight")
    for k, v in model.state_dict().items():
        if k in owned or ".weight_quantizer." in k or k in tensors:
            continue
        tensors.setdefault(k, v.detach().cpu().contiguous())
    # tied float tensors (a float embedding and its tied head) are stored once, the others named as aliases
    seen_ptr, aliases = {}, {}
    for k in list(tensors):
        t = tensors[k]
        ptr = (t.data_ptr(), tuple(t.shape), t.dtype) if t.numel() else None
        if ptr in seen_ptr:
            aliases[k] = seen_ptr[ptr]
            del tensors[k]
        elif ptr:
            seen_ptr[ptr] = k
    with (atomic_files(out) if merge else atomic_dir(out)) as tmp:
        model.config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        manifest = {"format": FORMAT, "version": VERSION, "bits": str(cfg.bits), "quant_config": cfg.to_dict(),
                    "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "modules": modules,
                    "aliases": aliases}
        manifest.update(extra or {})
        write_manifest(tmp, manifest)
    return Path(out)


def unpack_weights(model: nn.Module, dtype=torch.float32) -> nn.Module:
    """Dequantize every packed matrix of ``model`` once, to ``dtype`` (PackedWeight.unpack_once): the float weights
    in memory, the activation quantizers kept, the same outputs. For fast generation and evaluation from a packed
    folder when memory allows (4 bytes a weight in float32: about 540 MB for SmolLM2-135M)."""
    for m in model.modules():
        if isinstance(m, PackedWeight):
            m.unpack_once(dtype)
    return model


def use_kernel(model: nn.Module, on: bool = True) -> nn.Module:
    """Every packed linear layer of ``model`` (tied heads included) multiplies with the Triton kernel
    (kernels.packed_linear) straight from its codes, on CUDA: packed memory, no float copy of a matrix, the outputs
    of the dequantizing path to float rounding. Layers whose weights stay float are left as they are."""
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m.kernel = on and m.packed_source() is not None
    return model


def load_packed(folder, manifest: dict, dtype=None, device=None, unpack: bool = False, kernel: bool = False):
    from transformers import AutoConfig

    from .convert import quantize_model
    from .models import _auto_class

    if unpack and kernel:
        raise QuantGPTError("unpack and kernel exclude each other: the kernel multiplies from the packed codes")
    folder = Path(folder)
    path = folder / "model.safetensors"
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise QuantGPTError(f"{path}: unreadable safetensors file ({str(e).splitlines()[0][:200]})") from None
    config = AutoConfig.from_pretrained(folder)
    # Parameters on the meta device (buffers stay real): the float weights are never allocated, so loading
    # peaks at the packed size. Every parameter is then assigned from the file. The meta context wraps each
    # Parameter as it is registered, which unties tied ones: tie them again before converting.
    with init_empty_weights():
        model = _auto_class(config).from_config(config)
    model.tie_weights()
    quantize_model(model, QuantConfig.from_dict(manifest["quant_config"]), init=False)
    aliases = manifest.get("aliases", {})
    params = dict(model.named_parameters(remove_duplicate=False))
    for k, target in aliases.items():  # stored once: the model must tie them itself
        if k in params and target in params and params[k] is not params[target]:
            raise QuantGPTError(f"{path}: {k} is stored as {target}, but this model does not tie them")
    modules = manifest.get("modules", {})
    packed_of = {}
    for name, info in modules.items():
        if "tied_to" in info or "shares" in info:
            continue
        if info.get("bits") not in PACK_BITS:
            raise QuantGPTError(f"{folder / 'quantgpt.json'}: module {name} has {info.get('bits')}-bit codes, which this "
                                f"quantgpt cannot read (it reads {', '.join(map(str, PACK_BITS))})")
        shape = info["shape"]
        # 8-bit scales: the scales' codes and factors, and the asym grid's centres' (a stored zero otherwise)
        kinds = (("scale", "center") if f"{name}.center_code" in tensors else ("scale",)) \
            if info.get("scale_bits") == 8 else ()
        try:
            qw = tensors.pop(f"{name}.qweight")
            scale = None if kinds else tensors.pop(f"{name}.scale")
            codes = {f"{k}_{part}": tensors.pop(f"{name}.{k}_{part}") for k in kinds for part in ("code", "factor")}
        except KeyError:
            raise QuantGPTError(f"{path}: tensors of module {name} are missing") from None
        zero = tensors.pop(f"{name}.zero", None)
        if qw.numel() != packed_nbytes(shape[0] * shape[1], info["bits"]):
            raise QuantGPTError(f"{path}: packed codes of {name} have the wrong size")
        packed_of[name] = PackedWeight(qw, scale, zero, info["bits"], shape, info["qmin"], info["granularity"],
                                       info["group_size"], codes or None)
    for name, info in modules.items():
        old = model.get_submodule(name)
        if info["kind"] == "embedding":
            owner = info.get("shares", name)
            new = PackedEmbedding(packed_of[owner], old.padding_idx, old.embed_scale, shared="shares" in info)
        else:
            tied = model.get_submodule(info["tied_to"]) if "tied_to" in info else None
            new = PackedLinear(packed_of.get(name), old.bias, old.act_quantizer, tied=tied,
                               row_scale=getattr(old, "row_scale", None), transposed=old.transposed)
        replace_module(model, name, new)
    # embeddings are replaced before the heads that tie to them
    for name, info in modules.items():
        if "tied_to" in info:
            model.get_submodule(name)._tied = [model.get_submodule(info["tied_to"])]
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    for k, target in aliases.items():  # assign=True replaced the owner's Parameter: tie the alias to it again
        if k in params and target in params:
            owner, _, attr = k.rpartition(".")
            setattr(model.get_submodule(owner), attr, model.get_parameter(target))
    missing = [k for k in missing if k not in aliases and not k.endswith(
        tuple(f"{owner}.{t}" for owner in ("packed", "packed_weight") for t in MODULE_TENSORS))]
    missing += [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta and n not in missing]
    model = finish_loading(model, path, missing, unexpected, dtype, device)
    if kernel:
        return use_kernel(model)
    return unpack_weights(model, dtype or torch.float32) if unpack else model
