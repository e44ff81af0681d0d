"""Run a language model as "hidden states, then the LM head", so that callers can apply the head in chunks
and never hold the full (batch x seq x vocab) logits in memory."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modules import QuantLinear, shared_tables


def supports_chunked_head(model: nn.Module) -> bool:
    cfg = model.config
    return (not getattr(cfg, "is_encoder_decoder", False)
            and getattr(cfg, "final_logit_softcapping", None) is None
            and getattr(cfg, "logit_scale", None) is None
            and model.base_model is not model
            and model.get_output_embeddings() is not None)


def hidden_states(model: nn.Module, input_ids: torch.Tensor, output_hidden_states: bool = False):
    """The base model's output for ``input_ids`` (``last_hidden_state`` and, if asked, all layers)."""
    return model.base_model(input_ids=input_ids, output_hidden_states=output_hidden_states, use_cache=False)


def hidden_states_and_head(model: nn.Module, input_ids: torch.Tensor, output_hidden_states: bool = False,
                           tables: list | None = None):
    """``(hidden_states(...), Head(model))`` with a quantized tied table made once for both (shared_tables): the
    lookup and the head use one fake-quantized tensor, and autograd goes back through it once. ``tables``: the
    model's quant_embeddings, found once by a caller that runs it many times."""
    with shared_tables(model, tables):
        return hidden_states(model, input_ids, output_hidden_states), Head(model)


class Head:
    """The LM head as ``(act quantizer, weight, bias)``, with the weight quantized once per call site."""

    def __init__(self, model: nn.Module):
        from .packed import PackedLinear

        head = model.get_output_embeddings()
        if isinstance(head, QuantLinear):
            self.act, self.weight, self.bias = head.act_quantizer, head.quantized_weight(), head.bias
        elif isinstance(head, PackedLinear):
            self.act, self.weight, self.bias = head.act_quantizer, head.dequantized_weight(), head.bias
        else:
            self.act, self.weight, self.bias = None, head.weight, getattr(head, "bias", None)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            h = self.act(h)
        return F.linear(h, self.weight, self.bias)
