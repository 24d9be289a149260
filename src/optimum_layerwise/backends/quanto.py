"""optimum-quanto backend: round-to-nearest weight quantization at int2, int4 or int8."""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from ..modules import QUANTO_BITS, QuantoLinear, quanto_tensor_specs
from .base import QuantizationBackend


class QuantoBackend(QuantizationBackend):
    """Weights-only RTN quantization by optimum-quanto: asymmetric group-wise for int2/int4 (scale and shift per
    group), symmetric per output channel for int8, as quanto does."""

    name = "quanto"
    supported_bits = QUANTO_BITS
    requirement = "optimum-quanto"

    def is_available(self) -> bool:
        return importlib.util.find_spec("optimum.quanto") is not None

    def tensor_specs(self, out_features, in_features, bits, group_size):
        return quanto_tensor_specs(out_features, in_features, bits, None if bits == 8 else group_size)

    def level_settings(self, bits: int, group_size: int | None) -> dict:
        """int8 is symmetric per output channel; int2/int4 asymmetric (scale and shift) per group."""
        return {"sym": True, "group_size": None} if bits == 8 else {"sym": False, "group_size": group_size}

    def is_packed(self, module: nn.Module) -> bool:
        return isinstance(module, QuantoLinear)

    def dequantized_weight(self, module: nn.Module) -> torch.Tensor:
        return module.dequantized_weight()

    def quantize_linear(self, linear: nn.Linear, bits: int, group_size: int | None) -> nn.Module:
        return QuantoLinear.from_linear(linear, bits, group_size)

    def empty_linear(self, in_features, out_features, bits, group_size, bias, dtype: torch.dtype) -> nn.Module:
        return QuantoLinear(in_features, out_features, bits, group_size, bias=bias, dtype=dtype, device="meta")
