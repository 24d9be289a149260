"""Scoring every decoder layer with a named importance method (or checking explicit scores)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..data.calibration import CALIBRATION_BATCH_SIZE, CalibrationBatch, calibration_batches
from ..model.layers import decoder_layers, vocab_size
from ..plan.importance_methods import IMPORTANCE_METHODS, check_importance, importance_scores, missing_data_message
from .baselines import depth_scores, random_scores
from .lim import lim_scores
from .sensitivity import costs_to_scores, measure_layer_costs
from .zd import zd_scores


def _negated(scores: list[float]) -> list[float]:
    return [-score for score in scores]


def _sensitivity(model, batches, *, method, bits, backend, group_size, skip, **_) -> list[float]:
    measure = IMPORTANCE_METHODS[method].measure
    costs = measure_layer_costs(
        model, batches, bits, measure=measure, backend=backend, group_size=group_size, skip=skip
    )
    return costs_to_scores(costs)


SCORERS: dict[str, Callable[..., list[float]]] = {
    "lim": lambda model, batches, **_: lim_scores(model, batches),
    "reverse_lim": lambda model, batches, **_: _negated(lim_scores(model, batches)),
    "zd": lambda model, batches, skip, **_: zd_scores(model, skip),
    "reverse_zd": lambda model, batches, skip, **_: _negated(zd_scores(model, skip)),
    "random": lambda model, batches, num_layers, seed, **_: random_scores(num_layers, seed),
    "depth": lambda model, batches, num_layers, **_: depth_scores(num_layers),
    "sensitivity": _sensitivity,
    "sensitivity_kl": _sensitivity,
}


def score_layers(
    model: nn.Module,
    method: str | Sequence[float],
    batches: Sequence[CalibrationBatch] | None,
    *,
    seed: int = 0,
    skip: Sequence[str] = (),
    bits: Sequence[int] = (8, 4),
    backend: str = "quanto",
    group_size: int | None = 128,
) -> list[float]:
    """Score every decoder layer of `model` on calibration batches prepared by the caller; higher = more important.

    Args:
        model (`PreTrainedModel`):
            A causal LM in full precision (Llama, Mistral, Qwen2, Gemma3, ...).
        method (`str` or `Sequence[float]`):
            A name of [`~optimum_layerwise.importance.IMPORTANCE_METHODS`], or the scores themselves (checked against
            the model's depth).
        batches (`Sequence[CalibrationBatch]`, *optional*):
            Calibration batches for the data-driven methods; `None` for data-free ones.
        seed (`int`, *optional*, defaults to 0):
            Seed of `"random"`.
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
    if IMPORTANCE_METHODS[method].needs_data and not batches:
        raise ValueError(missing_data_message(method))
    return SCORERS[method](
        model,
        batches,
        method=method,
        num_layers=num_layers,
        seed=seed,
        skip=skip,
        bits=tuple(bits),
        backend=backend,
        group_size=group_size,
    )


def compute_importance(
    model: nn.Module,
    method: str | Sequence[float],
    dataset: Any = None,
    tokenizer: Any = None,
    *,
    num_samples: int = 8,
    seq_len: int = 512,
    batch_size: int = CALIBRATION_BATCH_SIZE,
    seed: int = 0,
    **scoring: Any,
) -> list[float]:
    """Score every decoder layer of `model` from raw calibration data; higher = more important.

    Args:
        model (`PreTrainedModel`), method (`str` or `Sequence[float]`):
            As for [`score_layers`].
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
        **scoring:
            `skip`, `bits`, `backend`, `group_size`: as for [`score_layers`].

    Returns:
        `list[float]`: one score per decoder layer.
    """
    batches = None
    if dataset is not None and isinstance(method, str) and method in IMPORTANCE_METHODS:
        if IMPORTANCE_METHODS[method].needs_data:
            batches = calibration_batches(
                dataset,
                tokenizer,
                num_samples=num_samples,
                seq_len=seq_len,
                batch_size=batch_size,
                seed=seed,
                vocab_size=vocab_size(model),
            )
    return score_layers(model, method, batches, seed=seed, **scoring)
