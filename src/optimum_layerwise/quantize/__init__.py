"""Packing mechanics: the backends, packed modules, sequential calibration, layer versions."""

from functools import partial

from ..utils.moved import moved_name


# `optimum_layerwise.quantize.quantize_model` was the module this package replaced: kept for one release
__getattr__ = partial(moved_name, "quantize")
