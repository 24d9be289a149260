"""The fields a plan is made of, read and checked: bit maps, costs, scores, budget names, granularity, group size."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


BUDGET_NAMES = ("target_bits", "memory_budget", "num_low_bit_layers")
# what one bit width is chosen for: a whole decoder layer (the paper), its attention or MLP block, or each Linear
GRANULARITIES = ("layer", "block", "module")


def effective_group_size(in_features: int, group_size: int | None) -> int | None:
    """Group size actually used for a Linear layer with `in_features` inputs.

    This is optimum-quanto's rule, applied to the requested group size instead of quanto's fixed 128: the group size
    shrinks by steps of 32 (not below 32) until it divides `in_features`; when none divides it, or when the layer is
    not wider than one group, the weight is quantized per output channel (`None`).

    Args:
        in_features (`int`):
            Number of input features of the Linear layer.
        group_size (`int`, *optional*):
            Requested group size; `None` means per output channel.

    Returns:
        `int` or `None`: the group size to use, or `None` for per-channel quantization.
    """
    if group_size is None or in_features <= group_size:
        return None
    size = group_size
    while in_features % size != 0 and size > 32:
        size -= 32
    return size if in_features % size == 0 else None


def normalize_layer_bits(
    layer_bits: Mapping[int | str, int], parameter: str = "layer_bits", fractional: bool = False
) -> dict[int, int | float]:
    """Turn a bit map read from JSON (string keys) or given by a user into `{layer_index: bits}`.

    Args:
        layer_bits (`Mapping`):
            Map from decoder-layer index (int, or its string form as JSON writes it) to a bit width.
        parameter (`str`, *optional*, defaults to `"layer_bits"`):
            Name used in error messages.
        fractional (`bool`, *optional*, defaults to `False`):
            Accept any positive number of bits (the mean bits of a layer whose modules have different widths).

    Returns:
        `dict[int, int | float]`: the same map with int keys, sorted by layer index.

    Raises:
        `ValueError`: if a key is not a non-negative integer or a value is not an integer (or a positive number when
        `fractional`).
    """
    if not isinstance(layer_bits, Mapping):
        raise ValueError(f"`{parameter}` must be a mapping {{layer_index: bits}}, got {type(layer_bits).__name__}.")
    normalized = {}
    for key, value in layer_bits.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"`{parameter}` keys must be decoder-layer indices, got {key!r}.") from None
        if index < 0 or str(index) != str(key).strip():
            raise ValueError(f"`{parameter}` keys must be non-negative integers, got {key!r}.")
        if fractional:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"`{parameter}[{index}]` must be a positive number of bits, got {value!r}.")
            value = int(value) if float(value).is_integer() else float(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"`{parameter}[{index}]` must be an integer number of bits, got {value!r}.")
        normalized[index] = value
    return dict(sorted(normalized.items()))


def normalize_layer_costs(layer_costs: Mapping) -> dict[int, dict[int, float]]:
    """Turn measured costs read from JSON (`{"0": {"4": 0.0, "2": 0.1}}`) into `{0: {4: 0.0, 2: 0.1}}`.

    Raises:
        `ValueError`: if the structure is not `{layer: {bits: finite cost}}`.
    """
    return _normalize_costs(layer_costs, "layer_costs", int, "layer")


def normalize_unit_costs(unit_costs: Mapping) -> dict[str, dict[int, float]]:
    """Turn measured costs of allocation units (blocks or modules, by full module name) read from JSON into
    `{name: {bits: cost}}`.

    Raises:
        `ValueError`: if the structure is not `{module name: {bits: finite cost}}`.
    """
    return _normalize_costs(unit_costs, "plan.unit_costs", str, "module name")


def _normalize_costs(costs: Mapping, parameter: str, key: type, key_name: str) -> dict:
    if not isinstance(costs, Mapping):
        raise ValueError(
            f"`{parameter}` must be a mapping {{{key_name}: {{bits: cost}}}}, got {type(costs).__name__}."
        )
    normalized = {}
    for unit, unit_costs in costs.items():
        if not isinstance(unit_costs, Mapping):
            raise ValueError(f"`{parameter}[{unit!r}]` must map bits to a cost, got {unit_costs!r}.")
        try:
            normalized[key(unit)] = {int(bits): float(cost) for bits, cost in unit_costs.items()}
        except (TypeError, ValueError):
            raise ValueError(
                f"`{parameter}[{unit!r}]` must map integer bits to numbers, got {unit_costs!r}."
            ) from None
        if not all(math.isfinite(cost) for cost in normalized[key(unit)].values()):
            raise ValueError(f"`{parameter}[{unit!r}]` holds a non-finite cost.")
    return dict(sorted(normalized.items()))


def check_layer_costs(
    layer_costs: Mapping[Any, Mapping[int, float]], levels: tuple[int, ...], parameter: str = "layer_costs"
) -> None:
    """Check that normalized costs give a cost for exactly the levels `levels` in every layer (or unit).

    Raises:
        `ValueError`: naming the layers whose levels differ.
    """
    wrong = {index: sorted(costs) for index, costs in layer_costs.items() if set(costs) != set(levels)}
    if wrong:
        raise ValueError(f"`{parameter}` must give a cost for each level {tuple(levels)}; got {wrong}.")


def average_bits(layer_bits: Mapping[int, int]) -> float:
    """Average bit width over decoder layers (each layer counts once, as in the paper's §3.2)."""
    if not layer_bits:
        raise ValueError("`layer_bits` is empty: there is no decoder layer to average over.")
    return sum(layer_bits.values()) / len(layer_bits)


def check_layer_bits(
    layer_bits: Mapping[int, int], num_layers: int | None, levels: tuple[int, ...], parameter: str = "layer_bits"
) -> None:
    """Check that a bit map covers exactly the model's decoder layers with the configured levels.

    Args:
        layer_bits (`Mapping[int, int]`):
            Normalized bit map (see [`normalize_layer_bits`]).
        num_layers (`int`, *optional*):
            Number of decoder layers of the model; `None` checks the bit widths only (no model at hand).
        levels (`tuple[int, ...]`):
            Allowed bit widths.
        parameter (`str`, *optional*, defaults to `"layer_bits"`):
            Name used in error messages.

    Raises:
        `ValueError`: naming the layers that the model lacks or that the map leaves out, or a bit width that is not
        one of `levels`.
    """
    unknown = [] if num_layers is None else sorted(index for index in layer_bits if index >= num_layers)
    if unknown:
        raise ValueError(
            f"`{parameter}` names layers {unknown} but the model has {num_layers} decoder layers "
            f"(0..{num_layers - 1})."
        )
    missing = [] if num_layers is None else sorted(set(range(num_layers)) - set(layer_bits))
    if missing:
        raise ValueError(f"`{parameter}` must give a bit width for every decoder layer; missing layers {missing}.")
    wrong = {index: bits for index, bits in layer_bits.items() if bits not in levels}
    if wrong:
        raise ValueError(f"`{parameter}` uses bit widths {wrong} that are not among `bits`={tuple(levels)}.")


def normalize_layer_scores(layer_scores) -> list[float]:
    """Turn saved importance scores into a list of finite floats.

    Raises:
        `ValueError`: if `layer_scores` is not a list of finite numbers.
    """
    if not isinstance(layer_scores, (list, tuple)) or not all(
        isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
        for score in layer_scores
    ):
        raise ValueError(f"`layer_scores` must be a list of finite numbers, got {layer_scores!r:.80}.")
    return [float(score) for score in layer_scores]


def check_granularity(granularity: Any, parameter: str = "granularity") -> None:
    """Raise a `ValueError` naming `parameter` unless `granularity` is one of [`GRANULARITIES`]."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"`{parameter}` must be one of {GRANULARITIES}, got {granularity!r:.40}.")
