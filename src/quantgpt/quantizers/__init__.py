"""Weight and activation quantizers, one module per family, and the factory that builds them."""
from __future__ import annotations

from ..config import QuantConfig
from ..errors import QuantGPTError
from .activation import ActQuantizer
from .base import Encoded, WeightQuantizer, sym_levels
from .laq import LAQQuantizer
from .lsq import LSQQuantizer
from .mds import MDSQuantizer
from .minmax import MinMaxQuantizer
from .pact import PACTQuantizer

FAMILIES = {"mds": MDSQuantizer, "pact": PACTQuantizer, "lsq": LSQQuantizer, "laq": LAQQuantizer, "minmax": MinMaxQuantizer}


def make_weight_quantizer(family: str, bits: int, shape: tuple[int, int], cfg: QuantConfig,
                          embedding: bool = False) -> WeightQuantizer:
    """The quantizer of one matrix; ``embedding`` selects the token embedding's (and LM head's) scale layout."""
    if embedding and cfg.embedding_granularity is not None:
        common = dict(granularity=cfg.embedding_granularity, group_size=cfg.embedding_group_size, ragged=True)
    else:
        common = dict(granularity=cfg.granularity, group_size=cfg.group_size, ragged=cfg.ragged_groups)
    if family == "mds":
        # 8-bit scales where the layout has groups (an embedding kept per channel keeps fp16 scales)
        sb = cfg.scale_bits if common["granularity"] == "group" else 16
        return MDSQuantizer(bits, shape, mean_grad=cfg.mean_grad, init_gamma=cfg.init_gamma, grid=cfg.grid,
                            dynamic=cfg.dynamic_scale, scale_bits=sb, **common)
    if cfg.grid == "asym":
        raise QuantGPTError(f"grid 'asym' applies to the mds quantizer, not {family}")
    if family == "pact":
        return PACTQuantizer(bits, shape, init_gamma=cfg.init_gamma, grid=cfg.grid, **common)
    if cfg.grid != "sym":
        raise QuantGPTError(f"grid {cfg.grid!r} applies to the mds and pact quantizers, not {family}")
    if family == "lsq":
        return LSQQuantizer(bits, shape, **common)
    if family == "laq":
        return LAQQuantizer(bits, shape, **common)
    if family == "minmax":
        return MinMaxQuantizer(bits, shape, symmetric=cfg.symmetric, **common)
    raise ValueError(f"unknown quantizer family {family!r}")


__all__ = ["ActQuantizer", "Encoded", "WeightQuantizer", "MDSQuantizer", "PACTQuantizer", "LSQQuantizer",
           "LAQQuantizer", "MinMaxQuantizer", "FAMILIES", "make_weight_quantizer", "sym_levels"]
