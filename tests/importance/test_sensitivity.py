import pytest
import torch

from conftest import build_tiny_model
from optimum_layerwise import compute_importance
from optimum_layerwise.data.calibration import calibration_batches
from optimum_layerwise.importance.sensitivity import (
    costs_to_scores,
    measure_layer_costs,
    measure_unit_costs,
    scoring_batches,
)
from optimum_layerwise.plan.allocation import allocate_bits_by_cost


def make_fragile(layer):
    """Scale a layer's MLP weights up so that rounding them costs much more than in the other layers."""
    with torch.no_grad():
        layer.mlp.down_proj.weight.mul_(40)


@pytest.mark.parametrize("measure", ["output", "kl"])
def test_costs_find_the_fragile_layer(measure, token_batches):
    model = build_tiny_model("llama")
    make_fragile(model.model.layers[2])
    batches = calibration_batches(token_batches, batch_size=3)
    with torch.no_grad():
        before = model(token_batches[:1]).logits
    costs = measure_layer_costs(model, batches, (8, 4, 2), measure=measure, group_size=32)
    assert sorted(costs) == [0, 1, 2, 3]
    assert all(costs[i][8] == 0.0 and 0 < costs[i][4] < costs[i][2] for i in costs)
    assert max(range(4), key=lambda i: costs[i][2]) == 2
    with torch.no_grad():
        assert torch.equal(model(token_batches[:1]).logits, before)  # the model is restored


@pytest.mark.parametrize(
    "granularity, unit, members",
    [("layer", "model.layers.1", None), ("module", "model.layers.1.self_attn.v_proj", ["self_attn.v_proj"])],
)
def test_output_measure_matches_a_direct_computation(granularity, unit, members, token_batches):
    model = build_tiny_model("qwen2")
    batches = calibration_batches(token_batches[:2], batch_size=2)
    costs = measure_unit_costs(model, batches, (4, 2), granularity=granularity, group_size=32)
    # direct: capture layer 1's input, run it in full precision and with its Linear modules quantized at 2 bits
    captured = {}
    handle = model.model.layers[1].register_forward_hook(
        lambda m, args, kwargs, out: captured.update(args=args, kwargs=kwargs, out=out), with_kwargs=True
    )
    with torch.no_grad():
        model.model(input_ids=token_batches[:2], use_cache=False)
    handle.remove()
    from optimum_layerwise.quantize.swapping import LayerVersions

    versions = LayerVersions(model, "quanto", 32)
    versions.put(1, 2, members)
    with torch.no_grad():
        quantized = model.model.layers[1](*captured["args"], **captured["kwargs"])
    versions.put(1, None)
    per_token = (quantized - captured["out"]).norm(dim=-1) ** 2 / captured["out"].norm(dim=-1) ** 2
    expected = per_token.mean().item()  # every token counts alike, whatever the norm of its hidden state
    assert costs[unit][2] == pytest.approx(expected, rel=1e-4)


def test_one_forward_pass_plus_one_layer_pass_per_level(token_batches):
    model = build_tiny_model("llama")
    calls = {"model": 0, "layer0": 0, "lm_head": 0}
    model.model.embed_tokens.register_forward_hook(lambda *_: calls.__setitem__("model", calls["model"] + 1))
    model.model.layers[0].register_forward_hook(lambda *_: calls.__setitem__("layer0", calls["layer0"] + 1))
    model.lm_head.register_forward_hook(lambda *_: calls.__setitem__("lm_head", calls["lm_head"] + 1))
    measure_layer_costs(model, calibration_batches(token_batches, batch_size=6), (4, 2), group_size=32)
    # one pass of the embeddings records the inputs; layer 0 is called to record, to run, and once per lower level
    # ("model" counts the passes of the embeddings)
    assert calls == {"model": 1, "layer0": 3, "lm_head": 0}


def test_module_costs_find_the_fragile_module(token_batches):
    model = build_tiny_model("llama")
    make_fragile(model.model.layers[2])
    batches = calibration_batches(token_batches, batch_size=3)
    costs = measure_unit_costs(model, batches, (4, 2), granularity="module", group_size=32)
    assert len(costs) == 4 * 7 and all(costs[name][4] == 0.0 < costs[name][2] for name in costs)
    assert max(costs, key=lambda name: costs[name][2]).startswith("model.layers.2.mlp.")  # up/down, amplified by x40


@pytest.mark.parametrize("measure", ["output", "kl"])
def test_block_costs_find_the_fragile_block(measure, token_batches):
    model = build_tiny_model("llama")
    make_fragile(model.model.layers[2])
    batches = calibration_batches(token_batches, batch_size=3)
    costs = measure_unit_costs(model, batches, (4, 2), granularity="block", measure=measure, group_size=32)
    assert list(costs) == [f"model.layers.{i}.{block}" for i in range(4) for block in ("self_attn", "mlp")]
    assert max(costs, key=lambda name: costs[name][2]) == "model.layers.2.mlp"


def test_module_costs_rerun_the_layer_once_per_module_and_level(token_batches):
    model = build_tiny_model("llama")
    calls = {"model": 0, "layer0": 0}
    model.model.embed_tokens.register_forward_hook(lambda *_: calls.__setitem__("model", calls["model"] + 1))
    model.model.layers[0].register_forward_hook(lambda *_: calls.__setitem__("layer0", calls["layer0"] + 1))
    measure_unit_costs(
        model, calibration_batches(token_batches, batch_size=6), (8, 4, 2), granularity="module", group_size=32
    )
    assert calls == {"model": 1, "layer0": 2 + 7 * 2}  # record, run, then each module at each lower level


def test_costs_are_measured_on_a_few_windows_spread_over_the_data():
    model = build_tiny_model("llama")
    windows = torch.randint(0, 128, (24, 32), generator=torch.Generator().manual_seed(2))
    batches = calibration_batches(windows, batch_size=2)
    chosen = scoring_batches(batches)
    assert [next(i for i, b in enumerate(batches) if b is batch) for batch in chosen] == [0, 3, 6, 9]  # 8 windows
    assert all(a is b for a, b in zip(scoring_batches(batches[:3]), batches[:3], strict=True))
    costs = measure_layer_costs(model, batches, (4, 2), group_size=32)
    assert costs == measure_layer_costs(model, chosen, (4, 2), group_size=32)


def test_sensitivity_scores_through_compute_importance(token_batches):
    model = build_tiny_model("llama")
    make_fragile(model.model.layers[1])
    scores = compute_importance(model, "sensitivity", token_batches, bits=(8, 4), group_size=32)
    assert max(range(4), key=scores.__getitem__) == 1


def test_allocation_by_cost():
    costs = {0: {4: 0, 2: 0.5}, 1: {4: 0, 2: 0.1}, 2: {4: 0, 2: 0.9}, 3: {4: 0, 2: 0.2}}
    assert allocate_bits_by_cost(costs, (4, 2), target_bits=3.0) == {0: 4, 1: 2, 2: 4, 3: 2}
    assert allocate_bits_by_cost(costs, (4, 2), num_low_bit_layers=1) == {0: 4, 1: 2, 2: 4, 3: 4}
    # bytes: layer 2 is much bigger, so demoting it saves more per unit of cost
    sizes = [{4: 100, 2: 60}, {4: 100, 2: 60}, {4: 1000, 2: 100}, {4: 100, 2: 60}]
    plan = allocate_bits_by_cost(costs, (4, 2), memory_budget=500, layer_sizes=sizes)
    assert plan[2] == 2 and sum(sizes[i][b] for i, b in plan.items()) <= 500
    assert costs_to_scores(costs) == [0.5, 0.1, 0.9, 0.2]


def test_three_level_allocation_by_cost():
    costs = {i: {8: 0.0, 4: 0.01 * (i + 1), 2: 0.1 * (i + 1)} for i in range(4)}
    plan = allocate_bits_by_cost(costs, (8, 4, 2), target_bits=4.0)
    assert sum(plan.values()) <= 16 and plan[3] >= plan[0]
    with pytest.raises(ValueError, match=r"must give a cost for each level \(8, 4\); got \{0: \[8\]\}"):
        allocate_bits_by_cost({0: {8: 0.0}}, (8, 4), target_bits=6)
