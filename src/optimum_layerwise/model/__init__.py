"""The torch anatomy of a causal LM: its layers and Linears, the layer walk, offload, footprint, perplexity."""

from __future__ import annotations

from ..utils.lazy_exports import lazy_attributes


# public name -> the submodule that defines it, imported on first use
_PUBLIC = {
    "ModelShape": "shape",
    "decoder_layers": "layers",
    "decoder_layers_path": "layers",
    "describe_size": "footprint",
    "linear_modules": "layers",
    "materialized": "offload",
    "reference_nbytes": "footprint",
    "safetensors_tensor_bytes": "footprint",
    "streaming_device_map": "streaming",
    "tensor_nbytes": "footprint",
    "walk_layers": "walk",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
