"""Values and rules without torch: the request, the quantization and slicing plans, allocation, method registries."""

from functools import partial

from ..utils.moved import moved_name
from .fields import (
    BUDGET_NAMES,
    GRANULARITIES,
    average_bits,
    check_granularity,
    check_layer_bits,
    check_layer_costs,
    effective_group_size,
    normalize_layer_bits,
    normalize_layer_costs,
    normalize_layer_scores,
    normalize_unit_costs,
)
from .quantization_plan import PLAN_FORMAT, ModulePlan, QuantizationPlan
from .saved_format import LEGACY_PLAN_FIELDS, upgrade_saved_config


__all__ = [
    "BUDGET_NAMES",
    "GRANULARITIES",
    "LEGACY_PLAN_FIELDS",
    "PLAN_FORMAT",
    "ModulePlan",
    "QuantizationPlan",
    "average_bits",
    "check_granularity",
    "check_layer_bits",
    "check_layer_costs",
    "effective_group_size",
    "normalize_layer_bits",
    "normalize_layer_costs",
    "normalize_layer_scores",
    "normalize_unit_costs",
    "upgrade_saved_config",
]

# `optimum_layerwise.plan.resolve_modules` applies a backend, so it moved up to `quantize/`: kept for one release
__getattr__ = partial(moved_name, "plan")
