"""Quantized drop-in replacements for ``nn.Linear``, GPT-2's ``Conv1D`` and ``nn.Embedding``.

Each keeps the original float weight as its trainable master copy (same Parameter object, so tied weights
stay tied) and quantizes it on the fly in ``forward`` with its weight quantizer; linear layers also
quantize their input with an activation quantizer. Weight quantizers always see ``(out, in)`` matrices.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import ActQuantizer, WeightQuantizer


class QuantLinear(nn.Module):
    """``y = Q_a(x) @ Q_w(W)^T + b``; ``weight`` is ``(out, in)`` like ``nn.Linear``."""

    transposed = False  # Conv1D stores its weight as (in, out)

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None,
                 weight_quantizer: WeightQuantizer | None, act_quantizer: ActQuantizer | None,
                 tied_embedding: "QuantEmbedding | None" = None, row_scale: bool = False):
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.weight_quantizer = weight_quantizer
        self.act_quantizer = act_quantizer
        # A tied LM head uses the embedding's quantizer; held in a list so it is not registered twice.
        self._tied = [tied_embedding] if tied_embedding is not None else []
        out_f, in_f = self.weight_2d().shape
        self.in_features, self.out_features = in_f, out_f
        if row_scale and not self._tied:
            raise ValueError("row_scale is for a tied head (an untied one has its own quantizer's scales)")
        # a tied head's own scale per output row, on top of the shared table's (QuantConfig.head_scale)
        self.row_scale = nn.Parameter(torch.ones(out_f, device=weight.device, dtype=weight.dtype)) if row_scale else None

    def weight_2d(self) -> torch.Tensor:
        return self.weight.t() if self.transposed else self.weight

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight as ``(out, in)``."""
        if self._tied:
            q = self._tied[0].quantized_weight()
            return q * self.row_scale[:, None] if self.row_scale is not None else q
        w = self.weight_2d()
        return self.weight_quantizer(w) if self.weight_quantizer is not None else w

    def forward(self, x):
        if self.act_quantizer is not None:
            x = self.act_quantizer(x)
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self):
        tied = (", tied to the embedding" + (", own row scales" if self.row_scale is not None else "")) if self._tied else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{tied}"


class QuantConv1D(QuantLinear):
    """GPT-2's ``Conv1D`` (``y = x @ W + b`` with ``W`` of shape ``(in, out)``), quantized."""

    transposed = True

    @property
    def nf(self):
        return self.out_features

    @property
    def nx(self):
        return self.in_features


class QuantEmbedding(nn.Module):
    """Token embedding looked up in the quantized table; keeps ``padding_idx`` and any ``embed_scale``."""

    def __init__(self, weight: nn.Parameter, weight_quantizer: WeightQuantizer, padding_idx=None, embed_scale=None):
        super().__init__()
        self.weight = weight
        self.weight_quantizer = weight_quantizer
        self.padding_idx = padding_idx
        self.embed_scale = embed_scale  # BART-style scaled word embeddings multiply the lookup
        self.num_embeddings, self.embedding_dim = weight.shape
        self._shared: list | None = None  # inside shared_tables: [] until the table is made, then [table]

    def quantized_weight(self) -> torch.Tensor:
        if self._shared is None:
            return self.weight_quantizer(self.weight)
        if not self._shared:
            self._shared.append(self.weight_quantizer(self.weight))
        return self._shared[0]

    def forward(self, ids):
        out = F.embedding(ids, self.quantized_weight(), self.padding_idx)
        return out * self.embed_scale if self.embed_scale is not None else out

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}"


QUANT_MODULES = (QuantLinear, QuantEmbedding)


def quant_embeddings(model: nn.Module) -> list[QuantEmbedding]:
    """Every quantized embedding table of ``model`` (a tied head shares its table's module, so it is not one)."""
    return [m for m in model.modules() if isinstance(m, QuantEmbedding)]


@contextmanager
def shared_tables(model: nn.Module, tables: list[QuantEmbedding] | None = None):
    """Inside: each quantized embedding table of ``model`` is fake-quantized once, when first asked for, and that
    one tensor serves its lookup and a tied head. Without it, a forward and a head applied after it (lm.Head) quantize
    the table twice, and autograd goes back through both: a vocabulary-sized matrix quantized outside the compiled
    blocks. The weights must not change inside (one forward and its head: a training step's losses, one evaluation
    window); the table is dropped on leaving, so the next forward sees the updated weights. ``tables``: the
    model's quant_embeddings, when the caller keeps them (finding them walks every module: 0.5 ms a step for
    SmolLM2 on the CI machine, more on the GPU's host, which paces the forward)."""
    tables = quant_embeddings(model) if tables is None else tables
    for m in tables:
        m._shared = []
    try:
        yield
    finally:
        for m in tables:
            m._shared = None
