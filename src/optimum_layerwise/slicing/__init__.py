"""Rotation mechanics of dynamic layer-wise slicing (SliceGPT's rotation, DynamicSlicing's per-layer widths): which
models can be sliced, sliced layers with their shortcuts, the rotation."""

from __future__ import annotations

from ..utils.lazy_exports import lazy_attributes


# public name -> the submodule that defines it, imported on first use
_PUBLIC = {
    "check_sliceable": "architecture",
    "rebuild_sliced_shapes": "layers",
    "residual_path": "layers",
    "rotate_and_slice": "rotation",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
