"""Sizes of a model in memory and of a checkpoint on disk, measured rather than estimated."""

from __future__ import annotations

import math
import os
from pathlib import Path

from torch import nn

from .checksums import safetensors_header


def tensor_nbytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers of `module` (shared tensors counted once, offloaded ones included)."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def full_precision_nbytes(model: nn.Module) -> int:
    """Bytes the model would take with every packed Linear restored to a float weight of the model's dtype."""
    total = tensor_nbytes(model)
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if not hasattr(config, "quantization_backend"):
        return total
    backend = config.quantization_backend()
    float_size = model.dtype.itemsize
    for module in model.modules():
        if backend.is_packed(module):
            packed = tensor_nbytes(module) - (
                module.bias.numel() * module.bias.element_size() if module.bias is not None else 0
            )
            total += module.in_features * module.out_features * float_size - packed
    return total


SAFETENSORS_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}


def safetensors_nbytes(shape: list[int], dtype: str, where: str) -> int:
    """Bytes of one safetensors tensor from its header entry.

    Raises:
        `ValueError`: for a dtype safetensors does not define, naming `where` (file and tensor).
    """
    if dtype not in SAFETENSORS_DTYPE_BYTES:
        raise ValueError(f"{where} has the unknown dtype {dtype!r} (known: {', '.join(SAFETENSORS_DTYPE_BYTES)}).")
    return math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]


def safetensors_tensor_bytes(folder: str | os.PathLike) -> dict[str, int]:
    """Bytes of every tensor in a folder's safetensors files, read from the headers only."""
    sizes = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        header, _ = safetensors_header(path)
        for name, info in header.items():
            if name != "__metadata__":
                sizes[name] = safetensors_nbytes(info.get("shape", []), info.get("dtype"), f"{path.name}: {name}")
    return sizes
