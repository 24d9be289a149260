"""Layer importance: one score per decoder layer, higher = more important.

| method          | needs data | what it is                                                                 |
|-----------------|------------|----------------------------------------------------------------------------|
| `"lim"`         | yes        | minus the input/output cosine similarity of each layer (paper Eq. 1)        |
| `"reverse_lim"` | yes        | the LIM order reversed (paper baseline)                                    |
| `"zd"`          | no         | share of weights with z-score > 1 (paper §3.1, method-section direction)    |
| `"reverse_zd"`  | no         | the ZD order reversed (the abstract's "smaller is better")                 |
| `"random"`      | no         | a random order from `seed` (paper baseline)                                |
| `"depth"`       | no         | last layer kept, then from the bottom up: drop-from-the-top (Gromov et al.) |
| `"sensitivity"` | yes        | measured relative output error of each layer quantized alone (≈ 2 forwards)  |
| `"sensitivity_kl"` | yes     | measured next-token KL with each layer quantized alone (1 forward per layer) |

The two sensitivity methods score a layer by its cost at the lowest level; quantization with them allocates bits by
the full measured costs (see [`~optimum_layerwise.allocation.allocate_bits_by_cost`]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..calibration import calibration_batches
from ..layers import decoder_layers, vocab_size
from .baselines import depth_scores, random_scores
from .lim import lim_scores
from .sensitivity import costs_to_scores, measure_layer_costs
from .zd import zd_scores


@dataclass(frozen=True)
class ImportanceMethod:
    """A named scorer.

    Args:
        needs_data (`bool`):
            Whether the scorer runs the model on calibration data.
        score (`Callable`):
            `score(model, batches, num_layers=, seed=, skip=, bits=, backend=, group_size=) -> list[float]`.
    """

    needs_data: bool
    score: Callable[..., list[float]]


def _negated(scores: list[float]) -> list[float]:
    return [-score for score in scores]


IMPORTANCE_METHODS: dict[str, ImportanceMethod] = {
    "lim": ImportanceMethod(True, lambda model, batches, **_: lim_scores(model, batches)),
    "reverse_lim": ImportanceMethod(True, lambda model, batches, **_: _negated(lim_scores(model, batches))),
    "zd": ImportanceMethod(False, lambda model, batches, skip, **_: zd_scores(model, skip)),
    "reverse_zd": ImportanceMethod(False, lambda model, batches, skip, **_: _negated(zd_scores(model, skip))),
    "random": ImportanceMethod(False, lambda model, batches, num_layers, seed, **_: random_scores(num_layers, seed)),
    "depth": ImportanceMethod(False, lambda model, batches, num_layers, **_: depth_scores(num_layers)),
    "sensitivity": ImportanceMethod(True, lambda model, batches, **kw: _sensitivity(model, batches, "output", **kw)),
    "sensitivity_kl": ImportanceMethod(True, lambda model, batches, **kw: _sensitivity(model, batches, "kl", **kw)),
}
SENSITIVITY_METHODS = {"sensitivity": "output", "sensitivity_kl": "kl"}


def _sensitivity(model, batches, measure, *, bits, backend, group_size, skip, **_) -> list[float]:
    costs = measure_layer_costs(
        model, batches, bits, measure=measure, backend=backend, group_size=group_size, skip=skip
    )
    return costs_to_scores(costs)


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


def compute_importance(
    model: nn.Module,
    method: str | Sequence[float],
    dataset: Any = None,
    tokenizer: Any = None,
    *,
    num_samples: int = 8,
    seq_len: int = 512,
    batch_size: int = 8,
    seed: int = 0,
    skip: Sequence[str] = (),
    bits: Sequence[int] = (8, 4),
    backend: str = "quanto",
    group_size: int | None = 128,
) -> list[float]:
    """Score every decoder layer of `model`; higher = more important.

    Args:
        model (`PreTrainedModel`):
            A causal LM in full precision (Llama, Mistral, Qwen2, Gemma3, ...).
        method (`str` or `Sequence[float]`):
            One of `"lim"`, `"reverse_lim"`, `"zd"`, `"reverse_zd"`, `"random"`, `"depth"`, or the scores themselves.
        dataset (*optional*):
            Calibration data for data-driven methods: a list of strings (with `tokenizer`), token-id sequences, or a
            text file path (see [`~optimum_layerwise.calibration.token_windows`]).
        tokenizer (*optional*):
            Tokenizer for text datasets.
        num_samples (`int`, *optional*, defaults to 8), seq_len (`int`, *optional*, defaults to 512):
            At most `num_samples` windows of at most `seq_len` tokens.
        batch_size (`int`, *optional*, defaults to 8):
            Windows per forward pass.
        seed (`int`, *optional*, defaults to 0):
            Seed of `"random"` and of the calibration subset.
        skip (`Sequence[str]`, *optional*):
            Linear modules that are not quantized (`modules_to_not_convert`); ZD leaves them out.
        bits (`Sequence[int]`, *optional*, defaults to `(8, 4)`), backend (`str`, *optional*, defaults to `"quanto"`),
        group_size (`int`, *optional*, defaults to 128):
            The quantization the sensitivity methods measure (use the one you will quantize with).

    Returns:
        `list[float]`: one score per decoder layer.
    """
    if not isinstance(method, str):
        method = importance_scores(method)
    check_importance(method)
    num_layers = len(decoder_layers(model))
    if not isinstance(method, str):
        if len(method) != num_layers:
            raise ValueError(f"`importance` has {len(method)} scores but the model has {num_layers} decoder layers.")
        return [float(score) for score in method]
    scorer = IMPORTANCE_METHODS[method]
    batches = None
    if scorer.needs_data:
        if dataset is None:
            raise ValueError(
                f"importance={method!r} needs calibration data: pass `dataset` (and `tokenizer` for text), "
                "or use a data-free method such as 'zd'."
            )
        batches = calibration_batches(
            dataset,
            tokenizer,
            num_samples=num_samples,
            seq_len=seq_len,
            batch_size=batch_size,
            seed=seed,
            vocab_size=vocab_size(model),
        )
    return scorer.score(
        model,
        batches,
        num_layers=num_layers,
        seed=seed,
        skip=skip,
        bits=tuple(bits),
        backend=backend,
        group_size=group_size,
    )


__all__ = [
    "IMPORTANCE_METHODS",
    "SENSITIVITY_METHODS",
    "ImportanceMethod",
    "check_importance",
    "compute_importance",
    "importance_scores",
    "measure_layer_costs",
]
