"""The importance methods by name: what each needs, checked without torch.

This module imports neither torch nor transformers; the scorers themselves live in `scoring.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImportanceMethod:
    """What a named importance method needs and measures.

    Args:
        needs_data (`bool`):
            Whether it runs the model on calibration data.
        measure (`str`, *optional*):
            For the sensitivity methods, the cost measured per layer and level (`"output"`: relative output error;
            `"kl"`: next-token KL); bits are then allocated by the measured costs, not by the scores alone.
    """

    needs_data: bool
    measure: str | None = None


IMPORTANCE_METHODS: dict[str, ImportanceMethod] = {
    "lim": ImportanceMethod(needs_data=True),
    "reverse_lim": ImportanceMethod(needs_data=True),
    "zd": ImportanceMethod(needs_data=False),
    "reverse_zd": ImportanceMethod(needs_data=False),
    "random": ImportanceMethod(needs_data=False),
    "depth": ImportanceMethod(needs_data=False),
    "sensitivity": ImportanceMethod(needs_data=True, measure="output"),
    "sensitivity_kl": ImportanceMethod(needs_data=True, measure="kl"),
}


def needs_calibration_data(importance: Any) -> bool:
    """Whether `importance` (a method name or explicit scores) runs the model on calibration data."""
    method = IMPORTANCE_METHODS.get(importance) if isinstance(importance, str) else None
    return method is not None and method.needs_data


def missing_data_message(importance: str) -> str:
    """The error for a data-driven method given no calibration data (one wording for every entry point)."""
    return (
        f"importance={importance!r} needs calibration data: pass `dataset` (a corpus name such as 'shakespeare', a "
        "list of texts with `tokenizer`, token-id sequences or a text file path), or choose a data-free importance "
        "such as 'zd'."
    )


def importance_scores(importance: Sequence[float] | Mapping[int | str, float]) -> list[float]:
    """Scores given by the user as a list, or as a mapping `{layer_index: score}` covering layers `0..N-1`, as a list
    indexed by layer.

    Raises:
        `ValueError`: when a mapping skips or repeats a layer, or its keys are not layer indices.
    """
    if isinstance(importance, Mapping):
        try:
            by_layer = {int(key): score for key, score in importance.items()}
        except (TypeError, ValueError):
            raise ValueError(
                f"`importance` as a mapping must map decoder-layer indices to scores, got keys {list(importance)}."
            ) from None
        if len(by_layer) != len(importance) or sorted(by_layer) != list(range(len(by_layer))):
            raise ValueError(
                f"`importance` as a mapping must give a score for every decoder layer 0..N-1, got layers "
                f"{sorted(by_layer)}."
            )
        return [by_layer[index] for index in range(len(by_layer))]
    if isinstance(importance, (str, bytes)) or not isinstance(importance, (Sequence, Iterable)):
        raise ValueError("`importance` must be a method name, a list of scores or a {layer: score} mapping.")
    return list(importance)


def check_importance(importance: Any) -> None:
    """Raise a `ValueError` unless `importance` is a known method name or a list of finite floats."""
    if isinstance(importance, str):
        if importance not in IMPORTANCE_METHODS:
            raise ValueError(
                f"`importance` must be one of {sorted(IMPORTANCE_METHODS)} or a list of floats, got {importance!r}."
            )
        return
    if not isinstance(importance, Sequence) or not importance:
        raise ValueError(f"`importance` must be a method name or a non-empty list of floats, got {importance!r}.")
    for score in importance:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"`importance` scores must be finite numbers, got {score!r}.")
