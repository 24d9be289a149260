"""optimum-layerwise: variable layer-wise quantization of LLMs for Hugging Face Transformers.

Importing this package registers the quantization method `"layerwise"` with transformers (at once when transformers'
quantizer registry is loaded, else as soon as it loads), so that
`AutoModelForCausalLM.from_pretrained(path, quantization_config=LayerwiseQuantizationConfig(...))` quantizes a model
and `AutoModelForCausalLM.from_pretrained(saved_folder)` reloads it. The import itself loads neither torch nor
transformers; the public names below load their module on first use.
"""

from __future__ import annotations

from .lazy_exports import lazy_attributes
from .lazy_registration import register_with_transformers


__version__ = "0.1.0.dev0"

_PUBLIC = {
    "IMPORTANCE_METHODS": "importance",
    "compute_importance": "importance",
    "QUANT_METHOD": "config",
    "LayerwiseQuantizationConfig": "config",
    "LayerwiseHfQuantizer": "hf_quantizer",
    "LayerwiseSlicingConfig": "slicing.config",
    "allocate_bits": "allocation",
    "parse_memory": "units",
    "register": "registration",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)


register_with_transformers()
