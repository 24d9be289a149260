"""Configs saved before the plan was a value, read in today's form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .fields import BUDGET_NAMES
from .quantization_plan import PLAN_FORMAT


# what configs saved before the plan became a value held at their top level
LEGACY_PLAN_FIELDS = ("layer_scores", "dynamic", "level_settings", "group_size_overrides", "quality")


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
