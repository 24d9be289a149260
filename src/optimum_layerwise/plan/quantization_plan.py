"""The quantization plan as a value: which bits, group size and zero-point mode every quantized Linear gets.

A [`QuantizationPlan`] is made once per quantization (by `optimum_layerwise.planning`), applied by the quantizer,
saved in `config.json` and read back by the loader, which rebuilds every packed module from it alone. The helpers
below read and check the values a plan is made of. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from ..quantize.backends import QuantizationBackend

PLAN_FORMAT = 2
BUDGET_NAMES = ("target_bits", "memory_budget", "num_low_bit_layers")
# what one bit width is chosen for: a whole decoder layer (the paper), its attention or MLP block, or each Linear
GRANULARITIES = ("layer", "block", "module")
# what configs saved before the plan became a value held at their top level
LEGACY_PLAN_FIELDS = ("layer_scores", "dynamic", "level_settings", "group_size_overrides", "quality")


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


def _check_group_size_value(value, parameter: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{parameter}` must be a positive int or None, got {value!r:.40}.")
    return value


@dataclass(frozen=True)
class ModulePlan:
    """How one Linear module is quantized.

    Args:
        bits (`int`): Bit width of its weights.
        group_size (`int`, *optional*): Columns per quantization group; `None` = one group per output channel.
        sym (`bool`): Symmetric quantization (no zero-points).
    """

    bits: int
    group_size: int | None
    sym: bool

    def to_dict(self) -> dict[str, Any]:
        return {"bits": self.bits, "group_size": self.group_size, "sym": self.sym}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str) -> ModulePlan:
        """Read a saved entry, checking every value.

        Raises:
            `ValueError`: naming the module and the value that is wrong.
        """
        if not isinstance(data, Mapping) or set(data) != {"bits", "group_size", "sym"}:
            raise ValueError(f"`plan.modules[{name!r}]` must be {{'bits', 'group_size', 'sym'}}, got {data!r:.80}.")
        bits = data["bits"]
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
            raise ValueError(f"`plan.modules[{name!r}]['bits']` must be a positive int, got {bits!r:.40}.")
        if not isinstance(data["sym"], bool):
            raise ValueError(f"`plan.modules[{name!r}]['sym']` must be True or False, got {data['sym']!r:.40}.")
        group_size = _check_group_size_value(data["group_size"], f"plan.modules[{name!r}]['group_size']")
        return cls(bits, group_size, data["sym"])


def _frozen(mapping: Mapping) -> Mapping:
    return types.MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class QuantizationPlan:
    """Everything a layer-wise quantization decided, as an immutable value.

    Args:
        layers_path (`str`):
            Module path of the decoder layers, e.g. `"model.layers"`.
        layer_bits (`Mapping[int, int | float]`):
            Bit width of each decoder layer, as allocated; at `"block"` or `"module"` granularity, the mean bits of
            the layer's quantized weights (weighted by their number of parameters).
        modules (`Mapping[str, ModulePlan]`):
            Every quantized Linear by full module name, with the settings it is packed with. Empty only for a plan
            read from a checkpoint older than this format, until [`resolve_modules`] fills it in at load time.
        layer_scores (`tuple[float, ...]`, *optional*):
            Importance of each decoder layer (higher = more important); `None` for a bit map given by hand.
        layer_costs (`Mapping[int, Mapping[int, float]]`, *optional*):
            Measured cost of each decoder layer at each level, when bits were allocated by cost.
        budget (`Mapping[str, Any]`):
            The budget that was met, e.g. `{"target_bits": 6.0}` (empty for a bit map given by hand).
        quality (`Mapping[str, Any]`, *optional*):
            The held-out check that ended the quantization (see `optimum_layerwise.quality.QualityCheck`).
        granularity (`str`, *optional*, defaults to `"layer"`):
            What one bit width was chosen for: `"layer"`, `"block"` (attention / MLP of a layer) or `"module"`.
        unit_costs (`Mapping[str, Mapping[int, float]]`, *optional*):
            At `"block"` or `"module"` granularity, the measured cost of each block or module (by full name) at each
            level.
    """

    layers_path: str
    layer_bits: Mapping[int, int]
    modules: Mapping[str, ModulePlan]
    layer_scores: tuple[float, ...] | None = None
    layer_costs: Mapping[int, Mapping[int, float]] | None = None
    budget: Mapping[str, Any] = field(default_factory=dict)
    quality: Mapping[str, Any] | None = None
    granularity: str = "layer"
    unit_costs: Mapping[str, Mapping[int, float]] | None = None

    def __post_init__(self):
        check_granularity(self.granularity, "plan.granularity")
        fractional = self.granularity != "layer"
        freeze = {
            "layer_bits": _frozen(normalize_layer_bits(self.layer_bits, "plan.layer_bits", fractional)),
            "modules": _frozen(dict(sorted(self.modules.items()))),
            "budget": _frozen(self.budget),
        }
        if self.layer_scores is not None:
            freeze["layer_scores"] = tuple(normalize_layer_scores(list(self.layer_scores)))
        if self.layer_costs is not None:
            costs = normalize_layer_costs(self.layer_costs)
            freeze["layer_costs"] = _frozen({index: _frozen(level) for index, level in costs.items()})
        if self.unit_costs is not None:
            costs = normalize_unit_costs(self.unit_costs)
            freeze["unit_costs"] = _frozen({name: _frozen(level) for name, level in costs.items()})
        if self.quality is not None:
            freeze["quality"] = _frozen(self.quality)
        for name, value in freeze.items():
            object.__setattr__(self, name, value)

    def __deepcopy__(self, memo) -> QuantizationPlan:
        return self  # immutable: copies of a config share their plan

    def __reduce__(self):
        return (QuantizationPlan.from_dict, (self.to_dict(),))

    def replace(self, **changes: Any) -> QuantizationPlan:
        """A new plan with some fields changed (checked and frozen like any plan)."""
        return dataclasses.replace(self, **changes)

    def check_levels(self, levels: tuple[int, ...]) -> None:
        """Check that every bit width of the plan is one of `levels`.

        Raises:
            `ValueError`: naming the layers or modules whose bits are not among `levels`.
        """
        if self.granularity == "layer":
            check_layer_bits(self.layer_bits, None, levels, parameter="plan.layer_bits")
        wrong = {name: module.bits for name, module in self.modules.items() if module.bits not in levels}
        if wrong:
            shown = dict(list(wrong.items())[:3])
            raise ValueError(f"`plan.modules` uses bit widths {shown} that are not among `bits`={tuple(levels)}.")

    def settings_of(self, index: int, modules: Mapping[str, Any]) -> dict[str, tuple[Any, ModulePlan]]:
        """`{name: (module, its ModulePlan)}` for the `modules` of decoder layer `index`, named inside the layer."""
        return {name: (module, self.modules[f"{self.layers_path}.{index}.{name}"]) for name, module in modules.items()}

    @property
    def average_bits(self) -> float:
        """Average bit width over decoder layers (paper §3.2)."""
        return average_bits(self.layer_bits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict, as saved under `"plan"` in the layer-wise `quantization_config`."""
        return {
            "format": PLAN_FORMAT,
            "layers_path": self.layers_path,
            "layer_bits": {str(index): bits for index, bits in self.layer_bits.items()},
            "layer_scores": list(self.layer_scores) if self.layer_scores is not None else None,
            "layer_costs": (
                {str(i): {str(b): c for b, c in costs.items()} for i, costs in self.layer_costs.items()}
                if self.layer_costs is not None
                else None
            ),
            "budget": dict(self.budget),
            "modules": {name: module.to_dict() for name, module in self.modules.items()},
            "quality": dict(self.quality) if self.quality is not None else None,
            "granularity": self.granularity,
            "unit_costs": (
                {name: {str(b): c for b, c in costs.items()} for name, costs in self.unit_costs.items()}
                if self.unit_costs is not None
                else None
            ),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantizationPlan:
        """Read [`to_dict`]'s output back, checking every value.

        Raises:
            `ValueError`: for a plan of another format or a malformed entry, naming it.
        """
        if not isinstance(data, Mapping) or data.get("format") != PLAN_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"`plan` must be a layer-wise plan of format {PLAN_FORMAT}, got format {found!r:.40}.")
        if not isinstance(data.get("layers_path"), str) or not isinstance(data.get("modules"), Mapping):
            raise ValueError("`plan` needs `layers_path` (a module path) and `modules` (a mapping of module names).")
        if not isinstance(data.get("budget") or {}, Mapping):
            raise ValueError(f"`plan.budget` must be a mapping, got {data.get('budget')!r:.40}.")
        return cls(
            layers_path=data["layers_path"],
            layer_bits=data.get("layer_bits"),
            modules={name: ModulePlan.from_dict(entry, name) for name, entry in data["modules"].items()},
            layer_scores=data.get("layer_scores"),
            layer_costs=data.get("layer_costs"),
            budget=data.get("budget") or {},
            quality=data.get("quality"),
            granularity=data.get("granularity", "layer"),
            unit_costs=data.get("unit_costs"),
        )


def resolve_modules(
    linears: Iterable[tuple[int, str, int]],
    layer_bits: Mapping[int, int],
    backend: QuantizationBackend,
    group_size: int | None,
) -> dict[str, ModulePlan]:
    """The settings of every Linear for a bit map: the one place a requested group size becomes a module's.

    Args:
        linears (`Iterable[tuple[int, str, int]]`):
            `(layer_index, full_module_name, in_features)` of every Linear to quantize.
        layer_bits (`Mapping[int, int]`):
            Bits of each decoder layer.
        backend ([`~optimum_layerwise.backends.QuantizationBackend`]):
            Decides each level's settings ([`~QuantizationBackend.level_settings`]) and how a group size adapts to a
            layer's width ([`~QuantizationBackend.layer_group_size`]).
        group_size (`int`, *optional*):
            Requested group size.
    """
    return {
        name: backend.module_plan(in_features, layer_bits[index], group_size) for index, name, in_features in linears
    }


def upgrade_saved_config(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A config saved before the plan was a value (its results at the top level) in today's form: the bit map, scores,
    costs and quality become a `plan` whose modules the loader resolves from the model. Other dicts are returned
    as they are."""
    if "plan" in saved or saved.get("layer_bits") is None or not any(key in saved for key in LEGACY_PLAN_FIELDS):
        return dict(saved)
    plan = {
        "format": PLAN_FORMAT,
        "layers_path": "",
        "layer_bits": saved["layer_bits"],
        "layer_scores": saved.get("layer_scores"),
        "layer_costs": saved.get("layer_costs"),
        "budget": {name: saved[name] for name in BUDGET_NAMES if saved.get(name) is not None},
        "modules": {},
        "quality": saved.get("quality"),
    }
    request = {key: value for key, value in saved.items() if key not in (*LEGACY_PLAN_FIELDS, "layer_bits")}
    return {**request, "layer_costs": None, "plan": plan}
