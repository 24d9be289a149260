"""Any value of any argument, given directly or read from a saved config.json, either builds a config that survives a
JSON round trip or raises a `ValueError`: never another exception from deep inside."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.plan import ModulePlan, QuantizationPlan


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=8,
)
PLAUSIBLE = {
    "bits": st.sampled_from([(4, 2), (8, 4), (8, 4, 2), [4, 2], (4, 4), (2, 4), (3, 2), (4,), ()]),
    "backend": st.sampled_from(["quanto", "gptq", "awq", ""]),
    "target_bits": st.none() | st.floats(min_value=0, max_value=10) | st.integers(-2, 10),
    "memory_budget": st.none() | st.sampled_from(["150MB", "1.5GiB", "0B", "-1", "1e9", "12 kb", "lots"]),
    "num_low_bit_layers": st.none() | st.integers(-2, 40),
    "layer_bits": st.none() | st.dictionaries(st.integers(-1, 5) | st.text(max_size=2), st.sampled_from([2, 4, 8, 3])),
    "importance": st.sampled_from(["lim", "zd", "random", "depth", "sensitivity", "magic"])
    | st.lists(st.floats(allow_nan=True), max_size=4)
    | st.dictionaries(st.integers(-1, 4), st.floats(), max_size=4),
    "group_size": st.none() | st.integers(-64, 300),
    "seed": st.integers(-(2**70), 2**70),
    "num_samples": st.integers(-2, 300),
    "seq_len": st.integers(-2, 600),
    "modules_to_not_convert": st.none() | st.lists(st.text(max_size=8), max_size=3),
}
ARGUMENTS = sorted(PLAUSIBLE)


def assert_round_trip(config: LayerwiseQuantizationConfig) -> None:
    text = config.to_json_string()
    again = LayerwiseQuantizationConfig.from_dict(json.loads(text))
    assert again.to_json_string() == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=PLAUSIBLE))
def test_plausible_arguments_build_or_raise_value_error(kwargs):
    try:
        config = LayerwiseQuantizationConfig(**kwargs)
    except ValueError:
        return
    assert_round_trip(config)
    if isinstance(config.memory_budget, (int, float)):
        assert math.isfinite(config.memory_budget)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ARGUMENTS + ["plan", "layer_scores", "level_settings", "dynamic"]), JSON_VALUES)
def test_any_json_value_in_a_saved_config_loads_or_raises_value_error(name, value):
    plan = QuantizationPlan("model.layers", {0: 4, 1: 2}, {"model.layers.0.q": ModulePlan(4, 32, False)}, [0.5, 0.1])
    saved = LayerwiseQuantizationConfig(bits=(4, 2), importance="zd").with_plan(plan).to_dict()
    saved[name] = value
    try:
        config = LayerwiseQuantizationConfig.from_dict(json.loads(json.dumps(saved)))
    except ValueError:
        return
    assert_round_trip(config)
