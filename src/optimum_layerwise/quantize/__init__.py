"""Packing mechanics: the backends, packed modules, sequential calibration, layer versions."""

from __future__ import annotations

from functools import partial

from ..utils.lazy_exports import lazy_attributes
from ..utils.moved import moved_name


# public name -> the submodule that defines it, imported on first use
_PUBLIC = {
    "LayerVersions": "swapping",
    "QuantizationBackend": "backends",
    "QuantoLinear": "modules",
    "backend_for": "backends",
    "get_backend": "backends",
    "quantize_sequentially": "sequential",
    "weighted_affine": "weighted_rounding",
}
__all__ = sorted(_PUBLIC)
# `optimum_layerwise.quantize.quantize_model` was the module this package replaced: kept for one release
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC, fallback=partial(moved_name, "quantize"))
