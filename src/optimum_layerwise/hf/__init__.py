"""The transformers integration: config classes, HfQuantizers, loading, saving hooks, registration."""

from __future__ import annotations

from ..utils.lazy_exports import lazy_attributes


# public name -> the submodule that defines it, imported on first use
_PUBLIC = {
    "LayerwiseHfQuantizer": "quantizer",
    "LayerwiseQuantizationConfig": "config",
    "LayerwiseSlicingConfig": "slicing_config",
    "LayerwiseSlicingHfQuantizer": "slicing_quantizer",
    "predict_memory": "memory",
    "quantize_model": "compress",
    "register": "registration",
    "slice_model": "compress",
    "slice_then_quantize": "compress",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
