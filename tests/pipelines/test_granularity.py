"""Bits per block and per module: allocation by measured cost below the layer, end to end through transformers."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.model.footprint import tensor_nbytes
from optimum_layerwise.model.layers import allocation_units
from optimum_layerwise.quantize.modules import QuantoLinear


INPUT = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(5))


def packed_bits(model) -> dict[str, int]:
    return {name: module.bits for name, module in model.named_modules() if isinstance(module, QuantoLinear)}


def quantize(folder, token_batches, **kwargs):
    config = LayerwiseQuantizationConfig(
        **{"bits": (8, 4, 2), "group_size": 32, "dataset": token_batches, "quality_windows": 0, **kwargs}
    )
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)


def test_units_of_each_granularity(tiny_checkpoint):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    layer, block, module = (allocation_units(model, [], g) for g in ("layer", "block", "module"))
    assert [unit.name for unit in layer] == [f"model.layers.{i}" for i in range(4)]
    assert [unit.name for unit in block][:2] == ["model.layers.0.self_attn", "model.layers.0.mlp"]
    assert block[1].members == ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    assert len(module) == 28 and module[0].members == ("self_attn.q_proj",)
    skipped = allocation_units(model, ["o_proj"], "block")
    assert skipped[0].members == ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


@pytest.mark.parametrize("granularity", ["block", "module"])
def test_target_bits_is_the_average_over_weights(granularity, tiny_checkpoint, token_batches, tmp_path):
    model = quantize(tiny_checkpoint, token_batches, granularity=granularity, target_bits=4.5)
    plan = model.config.quantization_config.plan
    assert plan.granularity == granularity and len(plan.unit_costs) == 4 * (2 if granularity == "block" else 7)
    weights = {
        name: m.in_features * m.out_features for name, m in model.named_modules() if isinstance(m, QuantoLinear)
    }
    bits = packed_bits(model)
    assert bits == {name: module.bits for name, module in plan.modules.items()}
    average = sum(bits[name] * weights[name] for name in bits) / sum(weights.values())
    assert 4.0 < average <= 4.5  # the budget is met, and not wasted (an upgrade of the smallest unit would not fit)
    assert plan.average_bits == pytest.approx(average)  # layer_bits: each layer's mean bits over its weights
    assert len(set(bits.values())) > 1

    expected = model(INPUT).logits
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["granularity"] == granularity and saved["plan"]["granularity"] == granularity
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert packed_bits(reloaded) == bits
    assert reloaded.config.quantization_config.plan == plan
    assert torch.equal(reloaded(INPUT).logits, expected)


def test_memory_budget_is_met_to_the_byte(tiny_checkpoint, token_batches):
    smallest = tensor_nbytes(quantize(tiny_checkpoint, token_batches, layer_bits=dict.fromkeys(range(4), 2)))
    budget = smallest + 9_000
    model = quantize(tiny_checkpoint, token_batches, granularity="module", memory_budget=budget)
    used = tensor_nbytes(model)
    assert smallest < used <= budget
    with pytest.raises(ValueError, match="below the smallest model"):
        quantize(tiny_checkpoint, token_batches, granularity="module", memory_budget=smallest - 1)


def test_module_granularity_spends_bytes_where_they_matter(tiny_checkpoint, token_batches):
    """A module made fragile keeps high bits while the same number of weights elsewhere goes low."""
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        base.model.layers[1].self_attn.v_proj.weight[:, ::8] *= 30  # outliers: rounding the rest costs much more
    folder = f"{tiny_checkpoint}-fragile"
    base.save_pretrained(folder)
    model = quantize(folder, token_batches, bits=(4, 2), granularity="module", target_bits=3.0)
    bits = packed_bits(model)
    assert bits["model.layers.1.self_attn.v_proj"] == 4
    assert len({bits[f"model.layers.1.{name}"] for name in ("self_attn.v_proj", "mlp.up_proj", "mlp.gate_proj")}) > 1


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"granularity": "row"}, "`granularity` must be one of"),
        ({"granularity": "module", "importance": "lim"}, "`importance` must be one of"),
        ({"granularity": "module", "num_low_bit_layers": 2}, "describe whole layers"),
        ({"granularity": "block", "layer_bits": {0: 4, 1: 4}}, "describe whole layers"),
        ({"unit_costs": {"model.layers.0.mlp": {4: 0.0, 2: 1.0}}}, "give granularity='block' or 'module'"),
        ({"granularity": "block", "unit_costs": {"model.layers.0.mlp": {4: 0.0}}}, "a cost for each level"),
    ],
)
def test_bad_granularity_requests_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        LayerwiseQuantizationConfig(bits=(4, 2), **arguments)


def test_card_and_inspect_show_mean_bits(tiny_checkpoint, token_batches, tmp_path):
    from optimum_layerwise.formats.tables import format_layer_table

    model = quantize(tiny_checkpoint, token_batches, granularity="module", target_bits=4.5)
    model.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "chosen per Linear module" in card and "granularity='module'" in card
    plan = model.config.quantization_config.plan
    fractional = [bits for bits in plan.layer_bits.values() if isinstance(bits, float)]
    assert fractional and f"| {fractional[0]:.2f} |" in card
    assert f"{fractional[0]:.2f}" in format_layer_table(plan.layer_scores, dict(plan.layer_bits))


def test_measured_unit_costs_are_reused_for_another_budget(tiny_checkpoint, token_batches):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, num_hidden_layers=12)  # layer 10 sorts before 2
    folder = f"{tiny_checkpoint}-deep"
    model.save_pretrained(folder)
    first = quantize(folder, token_batches, granularity="module", target_bits=4.0).config.quantization_config
    measured = first.plan.unit_costs
    again = LayerwiseQuantizationConfig(
        bits=(8, 4, 2), group_size=32, granularity="module", target_bits=4.0, unit_costs=measured, quality_windows=0
    )
    reused = AutoModelForCausalLM.from_pretrained(folder, quantization_config=again).config.quantization_config
    assert reused.plan.modules == first.plan.modules  # no calibration data needed: nothing is measured again
    wrong = LayerwiseQuantizationConfig(
        bits=(8, 4, 2), granularity="module", target_bits=4.0, unit_costs=dict(list(measured.items())[:-1])
    )
    with pytest.raises(ValueError, match="`unit_costs` names 83 units but the model has 84"):
        AutoModelForCausalLM.from_pretrained(folder, quantization_config=wrong)
