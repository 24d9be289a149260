"""The quantization plan as a value: which bits, group size and zero-point mode every quantized Linear gets.

A [`QuantizationPlan`] is made once per quantization (by `optimum_layerwise.pipelines.planning`), applied by the
quantizer, saved in `config.json` and read back by the loader, which rebuilds every packed module from it alone. The
checks of its fields live in `optimum_layerwise.plan.fields`. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .fields import (
    average_bits,
    check_granularity,
    check_layer_bits,
    normalize_layer_bits,
    normalize_layer_costs,
    normalize_layer_scores,
    normalize_unit_costs,
)


PLAN_FORMAT = 2


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
