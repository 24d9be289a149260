"""The small interface every quantization backend implements."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn


class QuantizationBackend(ABC):
    """A weight quantizer that packs one Linear layer at a given bit width.

    Subclasses set `name`, `supported_bits` and `requirement` (the pip requirement that provides them).
    """

    name: ClassVar[str]
    supported_bits: ClassVar[tuple[int, ...]]
    requirement: ClassVar[str]

    @abstractmethod
    def is_available(self) -> bool:
        """Whether the library behind this backend can be imported."""

    @abstractmethod
    def tensor_specs(
        self, out_features: int, in_features: int, bits: int, group_size: int | None
    ) -> dict[str, tuple[tuple[int, ...], torch.dtype | None]]:
        """Serialized tensors of one packed Linear: name to `(shape, dtype)`; a `None` dtype is the model's."""

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

    def require(self) -> None:
        """Raise an `ImportError` naming the pip command when the backend's library is missing."""
        if not self.is_available():
            raise ImportError(
                f"backend={self.name!r} needs {self.requirement}, which is not installed: "
                f"`pip install {self.requirement}`."
            )
