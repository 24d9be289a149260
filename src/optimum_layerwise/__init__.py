"""optimum-layerwise: variable layer-wise quantization of LLMs for Hugging Face Transformers.

Importing this package registers the quantization method `"layerwise"` with transformers, so that
`AutoModelForCausalLM.from_pretrained(path, quantization_config=LayerwiseQuantizationConfig(...))` quantizes a model
and `AutoModelForCausalLM.from_pretrained(saved_folder)` reloads it.
"""

from .allocation import allocate_bits, parse_memory
from .config import QUANT_METHOD, LayerwiseQuantizationConfig
from .importance import IMPORTANCE_METHODS, compute_importance
from .quantizer import LayerwiseHfQuantizer
from .registration import register


register()

__version__ = "0.1.0.dev0"

__all__ = [
    "IMPORTANCE_METHODS",
    "QUANT_METHOD",
    "LayerwiseHfQuantizer",
    "LayerwiseQuantizationConfig",
    "allocate_bits",
    "compute_importance",
    "parse_memory",
]
