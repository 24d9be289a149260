"""Quantization backends, by name."""

from __future__ import annotations

from typing import Any

from ...plan.backends import BACKEND_BITS, backend_spec
from ...plan.request import QuantizationRequest
from .base import QuantizationBackend
from .gptq import GptqBackend
from .quanto import QuantoBackend


# the class of each backend named in `plan.backends.BACKENDS` (what each accepts is said there)
BACKENDS: dict[str, type[QuantizationBackend]] = {"quanto": QuantoBackend, "gptq": GptqBackend}


def get_backend(name: str, **options: Any) -> QuantizationBackend:
    """The backend registered under `name`, built with its `options` (e.g. `sym`, `desc_act` for `"gptq"`).

    Raises:
        `ValueError`: for an unknown name.
    """
    backend_spec(name)
    return BACKENDS[name](**options)


def backend_for(request: QuantizationRequest) -> QuantizationBackend:
    """The backend that packs the layers of `request`, with its options."""
    return get_backend(request.backend, **request.backend_options())


__all__ = [
    "BACKENDS",
    "BACKEND_BITS",
    "GptqBackend",
    "QuantizationBackend",
    "QuantoBackend",
    "backend_for",
    "get_backend",
]
