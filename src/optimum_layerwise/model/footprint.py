"""Sizes of a model in memory and of a checkpoint on disk, measured rather than estimated."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..utils.checksums import safetensors_header
from ..utils.units import format_bytes


# Layer-wise checkpoints are written in shards of at most this many bytes: saving a model whose layers live on disk
# (low-memory quantization) reads one shard at a time, so this bounds the memory a save needs; the same for every
# layer-wise save, so both paths write the same files.
MAX_SHARD_BYTES = 2 * 10**9


def tensor_nbytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers of `module` (shared tensors counted once, offloaded ones included)."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


class PackingBackend(Protocol):
    """What the sizes below need of a quantization backend (`quantize/backends/` implements it)."""

    def is_packed(self, module: nn.Module) -> bool: ...

    def packed_nbytes(
        self, out_features: int, in_features: int, bits: int, group_size: int | None, dtype: torch.dtype
    ) -> int: ...


def reference_nbytes(
    model: nn.Module,
    backend: PackingBackend | None = None,
    group_size: int | None = None,
    *,
    dtype: torch.dtype | None = None,
    bits: int | None = None,
) -> int:
    """Bytes the same model would take stored another way, to compare a quantized size with.

    Args:
        model (`nn.Module`):
            A model, layer-wise quantized or not.
        backend (`PackingBackend`, *optional*):
            The backend that packed the model's quantized Linears (without one, the model counts as unquantized).
        group_size (`int`, *optional*):
            The group size the model was quantized with (for `bits`).
        dtype (`torch.dtype`, *optional*):
            Store every floating tensor in this dtype; by default each keeps its own (restored weights take the
            model's dtype).
        bits (`int`, *optional*):
            Pack every quantized Linear at these bits with the same backend and group size (e.g. `4` for the
            uniform 4-bit model of the same size class); by default they are restored to float weights.
    """
    packed = [module for module in model.modules() if backend is not None and backend.is_packed(module)]
    inside_packed = {id(tensor) for module in packed for tensor in [*module.parameters(), *module.buffers()]}
    float_dtype = dtype or model.dtype
    seen, total = set(inside_packed), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            size = float_dtype.itemsize if dtype is not None and tensor.is_floating_point() else tensor.element_size()
            total += tensor.numel() * size
    for module in packed:
        if module.bias is not None:
            total += module.bias.numel() * float_dtype.itemsize
        if bits is None:
            total += module.in_features * module.out_features * float_dtype.itemsize
        else:
            total += backend.packed_nbytes(module.out_features, module.in_features, bits, group_size, float_dtype)
    return total


def size_comparisons(
    model: nn.Module, backend: PackingBackend | None = None, group_size: int | None = None
) -> dict[str, int]:
    """The sizes a quantized model is compared with: its unquantized self in its own dtype, in bfloat16 (the dtype
    checkpoints are usually published in) and packed at a uniform 4 bits with the same backend and group size.

    Returns:
        `dict[str, int]`: bytes by label, e.g. `{"float32": ..., "bfloat16": ..., "uniform 4-bit": ...}`.
    """
    own = str(model.dtype).removeprefix("torch.")
    sizes = {
        own: reference_nbytes(model, backend),
        "bfloat16": reference_nbytes(model, backend, dtype=torch.bfloat16),
    }
    if backend is not None:
        sizes["uniform 4-bit"] = reference_nbytes(model, backend, group_size, bits=4)
    return sizes


def describe_size(
    model: nn.Module, backend: PackingBackend | None = None, group_size: int | None = None, arrow: str = "->"
) -> str:
    """One line: the unquantized size, then the model's bytes against each of [`size_comparisons`], e.g.
    `"513.1 MiB in float32 -> 188.3 MiB (36.7% of float32, 73.4% of bfloat16, 113.0% of uniform 4-bit)"`."""
    size, comparisons = tensor_nbytes(model), size_comparisons(model, backend, group_size)
    own, unquantized = next(iter(comparisons.items()))
    ratios = ", ".join(f"{size / other:.1%} of {label}" for label, other in comparisons.items())
    return f"{format_bytes(unquantized)} in {own} {arrow} {format_bytes(size)} ({ratios})"


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
