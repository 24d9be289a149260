"""optimum-layerwise: variable layer-wise quantization of LLMs for Hugging Face Transformers.

Importing this package registers the quantization method `"layerwise"` with transformers (at once when transformers'
quantizer registry is loaded, else as soon as it loads), so that
`AutoModelForCausalLM.from_pretrained(path, quantization_config=LayerwiseQuantizationConfig(...))` quantizes a model
and `AutoModelForCausalLM.from_pretrained(saved_folder)` reloads it. The import itself loads neither torch nor
transformers; the public names below load their module on first use.
"""

from __future__ import annotations

from .hf.lazy_registration import register_with_transformers
from .utils.lazy_exports import lazy_attributes
from .utils.moved import install_aliases


__version__ = "0.1.0.dev0"

_PUBLIC = {
    "IMPORTANCE_METHODS": "importance",
    "compute_importance": "importance",
    "QUANT_METHOD": "hf.config",
    "LayerwiseQuantizationConfig": "hf.config",
    "LayerwiseHfQuantizer": "hf.quantizer",
    "LayerwiseSlicingConfig": "hf.slicing_config",
    "allocate_bits": "plan.allocation",
    "parse_memory": "utils.units",
    "predict_memory": "hf.memory",
    "quantize_model": "hf.compress",
    "slice_model": "hf.compress",
    "register": "hf.registration",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)


install_aliases()
register_with_transformers()
