"""Quantization backends, by name."""

from __future__ import annotations

from .base import QuantizationBackend
from .quanto import QuantoBackend


# Every backend the config accepts, with the bit widths it can pack.
BACKEND_BITS: dict[str, tuple[int, ...]] = {"quanto": QuantoBackend.supported_bits, "gptq": (2, 3, 4, 8)}

_IMPLEMENTED: dict[str, type[QuantizationBackend]] = {"quanto": QuantoBackend}


def get_backend(name: str) -> QuantizationBackend:
    """The backend registered under `name`.

    Raises:
        `ValueError`: for an unknown name.
        `NotImplementedError`: for a backend the config names but this release cannot run yet.
    """
    if name in _IMPLEMENTED:
        return _IMPLEMENTED[name]()
    if name in BACKEND_BITS:
        raise NotImplementedError(
            f"backend={name!r} is not available in this release of optimum-layerwise; use backend='quanto'."
        )
    raise ValueError(f"`backend` must be one of {sorted(BACKEND_BITS)}, got {name!r}.")


__all__ = ["BACKEND_BITS", "QuantizationBackend", "QuantoBackend", "get_backend"]
