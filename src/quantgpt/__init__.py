"""quantgpt: compress generative language models to 2-8 bit weights by quantization-aware training
(module-wise dynamic scaling and token-level contrastive distillation, Tao et al., ACL 2022)."""
from . import data
from .checkpoint import load, save_fakequant
from .config import Bits, QuantConfig
from .data import tokenize_files
from .convert import quantize_model
from .errors import QuantGPTError
from .evaluate import evaluate
from .models import load_any, load_float
from .export import dequantize_model, export
from .packed import save_packed
from .ptq import gptq_quantize, rtn_quantize
from .sizes import size_report
from .train_config import TrainConfig
from .trainer import compress

__version__ = "0.1.0"
__all__ = ["Bits", "QuantConfig", "QuantGPTError", "quantize_model", "rtn_quantize", "gptq_quantize",
           "evaluate", "load", "load_float", "load_any", "save_fakequant", "save_packed", "export",
           "dequantize_model", "size_report", "tokenize_files", "TrainConfig", "compress", "data"]
