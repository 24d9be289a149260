"""The bit plan: which precision each decoder layer gets, written down completely.

This module imports neither torch nor transformers. Every setting that decides the packed format of a layer is
computed here, explicitly, so that a saved checkpoint can be checked against its config before any tensor loads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


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


def normalize_layer_bits(layer_bits: Mapping[int | str, int], parameter: str = "layer_bits") -> dict[int, int]:
    """Turn a bit map read from JSON (string keys) or given by a user into `{layer_index: bits}`.

    Args:
        layer_bits (`Mapping`):
            Map from decoder-layer index (int, or its string form as JSON writes it) to a bit width.
        parameter (`str`, *optional*, defaults to `"layer_bits"`):
            Name used in error messages.

    Returns:
        `dict[int, int]`: the same map with int keys and int values, sorted by layer index.

    Raises:
        `ValueError`: if a key is not a non-negative integer or a value is not an integer.
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
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"`{parameter}[{index}]` must be an integer number of bits, got {value!r}.")
        normalized[index] = value
    return dict(sorted(normalized.items()))


def normalize_layer_costs(layer_costs: Mapping) -> dict[int, dict[int, float]]:
    """Turn measured costs read from JSON (`{"0": {"4": 0.0, "2": 0.1}}`) into `{0: {4: 0.0, 2: 0.1}}`.

    Raises:
        `ValueError`: if the structure is not `{layer: {bits: finite cost}}`.
    """
    if not isinstance(layer_costs, Mapping):
        raise ValueError(
            f"`layer_costs` must be a mapping {{layer: {{bits: cost}}}}, got {type(layer_costs).__name__}."
        )
    normalized = {}
    for layer, costs in layer_costs.items():
        if not isinstance(costs, Mapping):
            raise ValueError(f"`layer_costs[{layer!r}]` must map bits to a cost, got {costs!r}.")
        try:
            normalized[int(layer)] = {int(bits): float(cost) for bits, cost in costs.items()}
        except (TypeError, ValueError):
            raise ValueError(f"`layer_costs[{layer!r}]` must map integer bits to numbers, got {costs!r}.") from None
        if not all(math.isfinite(cost) for cost in normalized[int(layer)].values()):
            raise ValueError(f"`layer_costs[{layer!r}]` holds a non-finite cost.")
    return dict(sorted(normalized.items()))


def average_bits(layer_bits: Mapping[int, int]) -> float:
    """Average bit width over decoder layers (each layer counts once, as in the paper's §3.2)."""
    if not layer_bits:
        raise ValueError("`layer_bits` is empty: there is no decoder layer to average over.")
    return sum(layer_bits.values()) / len(layer_bits)


def check_layer_bits(layer_bits: Mapping[int, int], num_layers: int, levels: tuple[int, ...]) -> None:
    """Check that a bit map covers exactly the model's decoder layers with the configured levels.

    Args:
        layer_bits (`Mapping[int, int]`):
            Normalized bit map (see [`normalize_layer_bits`]).
        num_layers (`int`):
            Number of decoder layers of the model.
        levels (`tuple[int, ...]`):
            Allowed bit widths.

    Raises:
        `ValueError`: naming the layers that the model lacks or that the map leaves out, or a bit width that is not
        one of `levels`.
    """
    unknown = sorted(index for index in layer_bits if index >= num_layers)
    if unknown:
        raise ValueError(
            f"`layer_bits` names layers {unknown} but the model has {num_layers} decoder layers (0..{num_layers - 1})."
        )
    missing = sorted(set(range(num_layers)) - set(layer_bits))
    if missing:
        raise ValueError(f"`layer_bits` must give a bit width for every decoder layer; missing layers {missing}.")
    wrong = {index: bits for index, bits in layer_bits.items() if bits not in levels}
    if wrong:
        raise ValueError(f"`layer_bits` uses bit widths {wrong} that are not among `bits`={tuple(levels)}.")


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


def _check_group_size_value(value, parameter: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{parameter}` must be a positive int or None, got {value!r:.40}.")
    return value


def normalize_level_settings(level_settings: Mapping) -> dict[int, dict]:
    """Turn saved per-level settings (`{"4": {"sym": false, "group_size": 128}}`) into `{4: {...}}`.

    Raises:
        `ValueError`: if the structure is not `{bits: {"sym": bool, "group_size": int | None}}`.
    """
    if not isinstance(level_settings, Mapping):
        raise ValueError(f"`level_settings` must map bits to settings, got {level_settings!r:.80}.")
    normalized = {}
    for bits, settings in level_settings.items():
        if not isinstance(settings, Mapping) or set(settings) != {"sym", "group_size"}:
            raise ValueError(f"`level_settings[{bits!r}]` must be {{'sym': bool, 'group_size': int | None}}.")
        if not isinstance(settings["sym"], bool):
            raise ValueError(f"`level_settings[{bits!r}]['sym']` must be True or False, got {settings['sym']!r:.40}.")
        normalized[_as_int(bits, "level_settings")] = {
            "sym": settings["sym"],
            "group_size": _check_group_size_value(settings["group_size"], f"level_settings[{bits!r}]['group_size']"),
        }
    return dict(sorted(normalized.items(), reverse=True))


def _as_int(value, parameter: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"`{parameter}` keys must be integers, got {value!r}.")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{parameter}` keys must be integers, got {value!r:.40}.") from None
    if str(number) != str(value).strip():
        raise ValueError(f"`{parameter}` keys must be integers, got {value!r:.40}.")
    return number


def normalize_group_size_overrides(overrides: Mapping) -> dict[str, int | None]:
    """Check saved per-module group sizes (`{"model.layers.0.mlp.down_proj": 64}`).

    Raises:
        `ValueError`: if the structure is not `{module name: int | None}`.
    """
    if not isinstance(overrides, Mapping) or not all(isinstance(name, str) for name in overrides):
        raise ValueError(f"`group_size_overrides` must map module names to group sizes, got {overrides!r:.80}.")
    return {
        name: _check_group_size_value(value, f"group_size_overrides[{name!r}]") for name, value in overrides.items()
    }
