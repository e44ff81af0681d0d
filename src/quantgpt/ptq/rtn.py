"""Round-to-nearest: min-max scales from each row / group of the weights, no data needed."""
from __future__ import annotations

import dataclasses

from torch import nn

from ..config import QuantConfig
from ..convert import quantize_model


def rtn_config(bits, group_size: int | None = None, symmetric: bool = False, **kw) -> QuantConfig:
    """Min-max quantizers per output channel, or per group of ``group_size`` input columns."""
    return QuantConfig(bits=bits, quantizer="minmax", granularity="group" if group_size else "channel",
                       group_size=group_size, symmetric=symmetric, **kw)


def rtn_quantize(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """Quantize ``model`` in place by rounding to nearest (``cfg.quantizer`` must be ``minmax``)."""
    if cfg.quantizer != "minmax":
        cfg = dataclasses.replace(cfg, quantizer="minmax")
    return quantize_model(model, cfg, init=True)
