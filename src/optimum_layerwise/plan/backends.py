"""What each quantization backend accepts, by name: its bit widths, its options and when it needs calibration data.

The request is checked against this table without importing any backend; `quantize/backends` builds the backend of
each name from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


QUANTO_OPTIMIZERS = ("max", "hqq", "imatrix")


@dataclass(frozen=True)
class BackendSpec:
    """One backend as the request sees it.

    Args:
        bits (`tuple[int, ...]`): The bit widths it packs.
        options (`tuple[str, ...]`): The request fields passed to the backend's constructor.
        calibrated (`Callable[[dict], bool]`): Whether, with these options, it quantizes each layer from calibration
            data (then the request must give `dataset`).
    """

    bits: tuple[int, ...]
    options: tuple[str, ...]
    calibrated: Callable[[dict[str, Any]], bool]


BACKENDS: dict[str, BackendSpec] = {
    "quanto": BackendSpec((2, 4, 8), ("optimizer", "sym"), lambda options: options["optimizer"] == "imatrix"),
    "gptq": BackendSpec((2, 3, 4, 8), ("sym", "desc_act"), lambda options: True),
}
BACKEND_BITS: dict[str, tuple[int, ...]] = {name: spec.bits for name, spec in BACKENDS.items()}


def backend_spec(name: Any) -> BackendSpec:
    """The spec of backend `name`.

    Raises:
        `ValueError`: for an unknown name, listing the known ones.
    """
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"`backend` must be one of {sorted(BACKENDS)}, got {name!r}.")
    return BACKENDS[name]
