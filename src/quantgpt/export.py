"""Conversions between on-disk forms: fake-quantized -> packed, and any quantgpt folder -> a plain
``transformers`` folder (fp16, weights dequantized) for tools that do not know our format."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .checkpoint import atomic_dir, read_manifest
from .convert import replace_module
from .errors import QuantGPTError
from .modules import QuantConv1D, QuantEmbedding, QuantLinear
from .packed import FORMAT as PACKED, PackedEmbedding, PackedLinear, save_packed


@torch.no_grad()
def dequantize_model(model: nn.Module, dtype=torch.float16) -> nn.Module:
    """Replace quantized / packed layers by plain ones holding the dequantized weights (activation
    quantization is dropped). Tied heads stay tied."""
    emb_new = {}
    for name, m in list(model.named_modules()):
        if isinstance(m, (QuantEmbedding, PackedEmbedding)):
            w = m.quantized_weight() if isinstance(m, QuantEmbedding) else m.packed.dequantize()
            key = id(m.weight) if isinstance(m, QuantEmbedding) else id(m.packed)
            if key not in emb_new:
                emb_new[key] = nn.Parameter(w.to(dtype))
            e = nn.Embedding(w.shape[0], w.shape[1], padding_idx=m.padding_idx)
            e.weight = emb_new[key]
            if m.embed_scale is not None:
                e.forward = _scaled(e, m.embed_scale)
            replace_module(model, name, e)
    for name, m in list(model.named_modules()):
        if isinstance(m, (QuantLinear, PackedLinear)) and m._tied:  # a tied head: share the new embedding
            w = model.get_input_embeddings().weight
            lin = nn.Linear(w.shape[1], w.shape[0], bias=m.bias is not None)
            if m.row_scale is not None:  # its own row scales: a head of its own, untied
                lin.weight = nn.Parameter((w.float() * m.row_scale.detach().float()[:, None]).to(dtype))
                model.config.tie_word_embeddings = False
            else:
                lin.weight = w
            if m.bias is not None:
                lin.bias = nn.Parameter(m.bias.detach().to(dtype))
            replace_module(model, name, lin)
        elif isinstance(m, (QuantLinear, PackedLinear)):
            w = (m.quantized_weight() if isinstance(m, QuantLinear) else m.dequantized_weight()).to(dtype)
            if isinstance(m, QuantConv1D) or getattr(m, "transposed", False):  # GPT-2's Conv1D, quantized or packed
                new = Conv1D(w.shape[0], w.shape[1])
                new.weight = nn.Parameter(w.t().contiguous())
            else:
                new = nn.Linear(w.shape[1], w.shape[0], bias=m.bias is not None)
                new.weight = nn.Parameter(w)
            if m.bias is not None:
                new.bias = nn.Parameter(m.bias.detach().to(dtype))
            replace_module(model, name, new)
    if hasattr(model, "quant_config"):
        del model.quant_config
    return model.to(dtype)


def _scaled(module, scale):
    forward = module.forward

    def f(ids):
        return forward(ids) * scale
    return f


def export(src, out, dequantize: bool = False) -> Path:
    """``quantgpt export``: a packed checkpoint, or with ``dequantize`` a plain fp16 transformers folder."""
    from .checkpoint import load

    src = Path(src)
    manifest = read_manifest(src)
    model, tok = load(src, return_tokenizer=True)
    if dequantize:
        dequantize_model(model)
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        return Path(out)
    if manifest.get("format") == PACKED:
        raise QuantGPTError(f"{src} is already a packed checkpoint; use --dequantize for a plain transformers folder")
    extra = {k: v for k, v in manifest.items() if k not in ("format", "version", "quant_config", "dtype", "files")}
    return save_packed(model, tok, out, extra=extra)
