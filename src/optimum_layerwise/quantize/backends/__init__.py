"""Quantization backends, by name."""

from __future__ import annotations

from typing import Any

from .base import QuantizationBackend
from .gptq import GptqBackend
from .quanto import QuantoBackend


BACKENDS: dict[str, type[QuantizationBackend]] = {"quanto": QuantoBackend, "gptq": GptqBackend}

# Every backend the config accepts, with the bit widths it can pack.
BACKEND_BITS: dict[str, tuple[int, ...]] = {name: backend.supported_bits for name, backend in BACKENDS.items()}


def get_backend(name: str, **options: Any) -> QuantizationBackend:
    """The backend registered under `name`, built with its `options` (e.g. `sym`, `desc_act` for `"gptq"`).

    Raises:
        `ValueError`: for an unknown name.
    """
    if name not in BACKENDS:
        raise ValueError(f"`backend` must be one of {sorted(BACKENDS)}, got {name!r}.")
    return BACKENDS[name](**options)


__all__ = ["BACKENDS", "BACKEND_BITS", "GptqBackend", "QuantizationBackend", "QuantoBackend", "get_backend"]
