"""One entry point that turns a ``transformers`` model into a quantized one: ``quantize_model(model, cfg)``.

Every ``nn.Linear`` and GPT-2 ``Conv1D`` becomes a :class:`QuantLinear` with ``W``-bit weights and
``A``-bit inputs; the token embedding (and every embedding that shares its weight, as BART's encoder and
decoder do) becomes a :class:`QuantEmbedding` with ``E``-bit weights; the LM head follows the embedding:
a tied head reuses the embedding's quantizer and stays tied, an untied head gets its own ``E``-bit
quantizer, and when the embedding stays in floating point so does the head. Position embeddings, norms
and biases are never quantized.
"""
from __future__ import annotations

import fnmatch

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import QuantConfig
from .errors import QuantGPTError
from .modules import QuantConv1D, QuantEmbedding, QuantLinear
from .quantizers import ActQuantizer, make_weight_quantizer


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _act(cfg: QuantConfig) -> ActQuantizer | None:
    b = cfg.bits
    if not b.quantize_activations:
        return None
    return ActQuantizer(b.activation, cfg.act_granularity, cfg.act_learned_clip, cfg.act_group_size)


def _weight_q(family, bits, w2d, cfg, init, embedding=False):
    q = make_weight_quantizer(family, bits, tuple(w2d.shape), cfg, embedding=embedding)
    q.to(w2d.device)
    if init:
        q.initialize(w2d.detach())
    return q


def quantize_model(model: nn.Module, cfg: QuantConfig | None = None, *, init: bool = True) -> nn.Module:
    """Replace the model's layers with quantized ones in place and return the model.

    ``init=False`` skips setting quantizer parameters from the weights (used when a saved state dict
    will be loaded right after).
    """
    cfg = cfg or QuantConfig()
    bits = cfg.bits
    skipped = lambda name: any(fnmatch.fnmatchcase(name, p) for p in cfg.skip)  # noqa: E731
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if any(isinstance(m, (QuantLinear, QuantEmbedding)) for m in model.modules()):
        raise QuantGPTError("the model is already quantized")
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    replaced = 0

    emb_q = None
    if bits.quantize_embedding and emb is not None and not skipped(names.get(id(emb), "")):
        shared = emb.weight
        quantizer = _weight_q(cfg.embedding_quantizer or cfg.quantizer, bits.embedding, shared, cfg, init, embedding=True)
        for name, m in list(model.named_modules(remove_duplicate=False)):
            if isinstance(m, nn.Embedding) and m.weight is shared:
                qe = QuantEmbedding(shared, quantizer, m.padding_idx, getattr(m, "embed_scale", None))
                replace_module(model, name, qe)
                emb_q = emb_q or qe
                replaced += 1
        if head is not None and not skipped(names.get(id(head), "")):
            head_name = names[id(head)]
            if head.weight is shared:
                new_head = QuantLinear(shared, head.bias, None, _act(cfg), tied_embedding=emb_q, row_scale=cfg.head_scale)
            else:
                new_head = QuantLinear(head.weight, head.bias,
                                       _weight_q(cfg.embedding_quantizer or cfg.quantizer, bits.embedding, head.weight, cfg,
                                                 init, embedding=True),
                                       _act(cfg))
            replace_module(model, head_name, new_head)
            replaced += 1

    for name, m in list(model.named_modules()):
        if m is head or skipped(name) or not isinstance(m, (nn.Linear, Conv1D)):
            continue
        cls = QuantConv1D if isinstance(m, Conv1D) else QuantLinear
        w2d = m.weight.t() if cls is QuantConv1D else m.weight
        wq = _weight_q(cfg.quantizer, bits.weight, w2d, cfg, init) if bits.quantize_weights else None
        if wq is None and not bits.quantize_activations:
            continue
        replace_module(model, name, cls(m.weight, m.bias, wq, _act(cfg)))
        replaced += 1

    g = cfg.act_group_size if bits.quantize_activations and cfg.act_granularity == "group" else None
    if g:
        widths = sorted({m.in_features for m in model.modules() if isinstance(m, QuantLinear) and m.in_features % g})
        if widths:
            raise QuantGPTError(f"activation group size {g} does not divide the input width {widths[0]} of a layer: "
                                f"pick a divisor of every layer's input width")
    if replaced == 0:
        raise QuantGPTError("the model has nothing to quantize: no Linear, Conv1D or token embedding matched "
                            "(check --skip patterns and the bit setting)")
    model.quant_config = cfg
    return model


def quantized_linears(model: nn.Module):
    """``(name, module)`` for every QuantLinear that owns its weight quantizer (not a tied head)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear) and not m._tied]


def split_quant_parameters(model: nn.Module) -> tuple[list, list]:
    """The trainable parameters as ``(weights, quantizer parameters)``: the quantizers' clips and steps train at
    their own learning rate, but parameters a quantizer lists in ``weight_unit_params`` (the asym grid's
    centres) are in the weights' units and go with the weights. A tied head's own row scales are quantizer
    parameters."""
    weight_like = {id(getattr(m, n)) for m in model.modules()
                   for n in getattr(m, "weight_unit_params", ()) if getattr(m, n, None) is not None}
    weights, quant = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_quant = (("weight_quantizer." in name or "act_quantizer." in name or name.endswith(".row_scale"))
                        and id(p) not in weight_like)
            (quant if is_quant else weights).append(p)
    return weights, quant


def weight_quantizers(model: nn.Module):
    """``(module name, quantizer)`` for every distinct weight quantizer in the model."""
    seen, out = set(), []
    for n, m in model.named_modules():
        q = getattr(m, "weight_quantizer", None)
        if q is not None and id(q) not in seen:
            seen.add(id(q))
            out.append((n, q))
    return out


@torch.no_grad()
def scale_clips(model: nn.Module, factor: float) -> int:
    """Multiply every weight quantizer's learned clip (mds's gamma, pact's alpha) by ``factor``; returns how many.
    Used to move a fresh start off its ties: where the clip search keeps a group's whole range, its extreme
    weights sit exactly on the clip, and two correct implementations may round them to different sides."""
    n = 0
    for _, q in weight_quantizers(model):
        for name in ("gamma", "alpha"):
            t = getattr(q, name, None)
            if isinstance(t, nn.Parameter):
                t.mul_(factor)
                n += 1
    return n
