"""Composition: a request value, a model and calibration data in, a plan (and a quantized or sliced model) out."""

from __future__ import annotations

from ..utils.lazy_exports import lazy_attributes


# public name -> the submodule that defines it, imported on first use
_PUBLIC = {
    "MemoryEstimate": "memory_estimate",
    "check_held_out": "quality_check",
    "check_fits": "memory_estimate",
    "choose_path": "memory_estimate",
    "estimate_memory": "memory_estimate",
    "estimate_scoring_memory": "memory_estimate",
    "make_plan": "planning",
    "quantize_model": "quantize",
    "slice_model": "slice",
    "slice_then_quantize": "slice",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
