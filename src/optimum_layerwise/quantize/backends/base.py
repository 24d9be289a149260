"""The small interface every quantization backend implements."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ...plan.fields import effective_group_size
from ...plan.quantization_plan import ModulePlan, QuantizationPlan


class QuantizationBackend(ABC):
    """A weight quantizer that packs one Linear layer at a given bit width.

    Subclasses set `name` and `requirement` (the pip requirement that provides them; `plan/backends.py` declares the
    bit widths each accepts). A backend with `requires_calibration` also implements `calibrator`: it quantizes each
    Linear from its calibration inputs.
    """

    name: ClassVar[str]
    requirement: ClassVar[str]
    requires_calibration: bool = False

    @abstractmethod
    def is_available(self) -> bool:
        """Whether the library behind this backend can be imported."""

    @abstractmethod
    def tensor_specs(
        self, out_features: int, in_features: int, bits: int, group_size: int | None
    ) -> dict[str, tuple[tuple[int, ...], torch.dtype | None]]:
        """Serialized tensors of one packed Linear: name to `(shape, dtype)`; a `None` dtype is the model's."""

    def layer_group_size(self, in_features: int, group_size: int | None) -> int | None:
        """Group size used for a Linear with `in_features` inputs (default: optimum-quanto's rule, see
        [`~optimum_layerwise.plan.effective_group_size`]); `None` means one group per output channel."""
        return effective_group_size(in_features, group_size)

    @abstractmethod
    def level_settings(self, bits: int, group_size: int | None) -> dict[str, Any]:
        """The settings `bits`-bit weights are actually quantized with for a requested `group_size`:
        `{"sym": bool, "group_size": int | None}` (before any per-layer fallback of the group size)."""

    def module_plan(self, in_features: int, bits: int, group_size: int | None) -> ModulePlan:
        """The settings a Linear with `in_features` inputs is packed with at `bits` for a requested `group_size`: its
        level's settings ([`level_settings`]) with the group size adapted to the layer ([`layer_group_size`])."""
        level = self.level_settings(bits, group_size)
        return ModulePlan(bits, self.layer_group_size(in_features, level["group_size"]), level["sym"])

    @abstractmethod
    def is_packed(self, module: nn.Module) -> bool:
        """Whether `module` is one of this backend's packed Linear modules."""

    @abstractmethod
    def dequantized_weight(self, module: nn.Module) -> torch.Tensor:
        """The `(out_features, in_features)` weight a packed module computes with."""

    def calibrator(self, linear: nn.Linear, bits: int, group_size: int | None) -> Any:
        """An accumulator of `linear`'s calibration inputs (`add_batch(inputs)`, then `finish()` returns the packed
        module). Only backends with `requires_calibration` have one."""
        raise NotImplementedError(f"backend={self.name!r} quantizes without calibration data with these options.")

    def dynamic_overrides(self, plan: QuantizationPlan, base_bits: int) -> dict[str, dict[str, int]] | None:
        """Per-module overrides that the backend's checkpoint format uses to describe a mixed bit map (default: none,
        the bit map is only in the plan)."""
        return None

    def finish_loading(self, module: nn.Module) -> None:
        """Prepare a packed module after its tensors were loaded from a checkpoint (default: nothing to do)."""
        return None

    def checkpoint_tensors(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors whose checkpoint layout differs from the module's state dict, by name (default: none)."""
        return {}

    @property
    def has_checkpoint_layout(self) -> bool:
        """Whether this backend writes some tensors in another layout than the module's state dict (it overrides
        [`checkpoint_tensors`])."""
        return type(self).checkpoint_tensors is not QuantizationBackend.checkpoint_tensors

    @abstractmethod
    def quantize_linear(self, linear: nn.Linear, bits: int, group_size: int | None) -> nn.Module:
        """Return the packed replacement of `linear` at `bits` (the original is left untouched)."""

    @abstractmethod
    def empty_linear(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int | None,
        bias: bool,
        dtype: torch.dtype,
    ) -> nn.Module:
        """An empty packed Linear on the meta device, to be filled by loading a checkpoint."""

    def linear_nbytes(
        self, out_features: int, in_features: int, bits: int, group_size: int | None, float_dtype: torch.dtype
    ) -> int:
        """Exact bytes of one packed Linear weight (data + scales + zero-points, without bias)."""
        float_size = torch.empty((), dtype=float_dtype).element_size()
        return sum(
            math.prod(shape) * (torch.empty((), dtype=dtype).element_size() if dtype is not None else float_size)
            for shape, dtype in self.tensor_specs(out_features, in_features, bits, group_size).values()
        )

    def packed_nbytes(
        self, out_features: int, in_features: int, bits: int, group_size: int | None, float_dtype: torch.dtype
    ) -> int:
        """Exact bytes of a Linear of this shape packed at `bits` for a requested `group_size` (adapted to the layer
        as [`module_plan`] does), see [`linear_nbytes`]."""
        effective = self.module_plan(in_features, bits, group_size).group_size
        return self.linear_nbytes(out_features, in_features, bits, effective, float_dtype)

    def require(self) -> None:
        """Raise an `ImportError` naming the pip command when the backend's library is missing."""
        if not self.is_available():
            raise ImportError(
                f"backend={self.name!r} needs {self.requirement}, which is not installed: "
                f"`pip install {self.requirement}`."
            )


def resolve_modules(
    linears: Iterable[tuple[int, str, int]],
    layer_bits: Mapping[int, int],
    backend: QuantizationBackend,
    group_size: int | None,
) -> dict[str, ModulePlan]:
    """The settings of every Linear for a bit map: the one place a requested group size becomes a module's.

    Args:
        linears (`Iterable[tuple[int, str, int]]`):
            `(layer_index, full_module_name, in_features)` of every Linear to quantize.
        layer_bits (`Mapping[int, int]`):
            Bits of each decoder layer.
        backend ([`QuantizationBackend`]):
            Decides each level's settings ([`QuantizationBackend.level_settings`]) and how a group size adapts to a
            layer's width ([`QuantizationBackend.layer_group_size`]).
        group_size (`int`, *optional*):
            Requested group size.
    """
    return {
        name: backend.module_plan(in_features, layer_bits[index], group_size) for index, name, in_features in linears
    }
