"""Post-training baselines that write into the quantized modules, so training can start from them."""
from .gptq import gptq_quantize, gptq_layer
from .rtn import rtn_quantize

__all__ = ["rtn_quantize", "gptq_quantize", "gptq_layer"]
