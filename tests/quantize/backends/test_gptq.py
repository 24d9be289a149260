"""GPT-Q backend (gptqmodel): mixed-bit quantization on load, standard checkpoints, reloading with and without us.

These tests need gptqmodel (torch>=2.14.1): `python dev.py test-gptq` runs them in their own environment.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import build_tiny_tokenizer
from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.formats.checkpoint_summary import read_checkpoint_summary
from optimum_layerwise.model.layers import decoder_layers


pytestmark = pytest.mark.gptq

INPUTS = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(3))


def packed_modules(model) -> dict[str, torch.nn.Module]:
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    return {name: module for name, module in model.named_modules() if isinstance(module, TorchLinear)}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUTS).logits.float()


@pytest.mark.parametrize(
    "tiny_checkpoint, bits, importance",
    [("llama", (4, 2), "zd"), ("qwen2", (4, 3), "lim"), ("gemma3", (8, 4, 2), "sensitivity")],
    indirect=["tiny_checkpoint"],
)
def test_mixed_bits_round_trip(tiny_checkpoint, tmp_path, token_batches, bits, importance):
    config = LayerwiseQuantizationConfig(
        bits=bits, backend="gptq", importance=importance, dataset=token_batches, group_size=32, num_low_bit_layers=2
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    assert model.dtype == torch.float32  # TorchLinear computes in the activations' dtype: float32 is fast on CPU
    plan = model.config.quantization_config.plan.layer_bits
    assert sorted(plan.values()).count(bits[-1]) == 2
    packed = packed_modules(model)
    assert len(packed) == 7 * len(plan)
    for name, module in packed.items():
        index = int(name.split(".")[2])
        assert module.bits == plan[index]
        assert module.group_size == 32
    expected = logits(model)

    model.save_pretrained(tmp_path)
    build_tiny_tokenizer().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "gptq" and saved["checkpoint_format"] == "gptq" and saved["bits"] == bits[0]
    assert saved["layerwise"]["plan"]["layer_bits"] == {str(i): b for i, b in plan.items()}
    for index, layer_bits in plan.items():  # every layer's bits follow from `bits` and the `dynamic` overrides
        name = f"model.layers.{index}.mlp.down_proj"
        overrides = [o["bits"] for p, o in saved["dynamic"].items() if re.match(p.removeprefix("+:"), name)]
        assert overrides == ([] if layer_bits == bits[0] else [layer_bits])

    summary = read_checkpoint_summary(str(tmp_path))  # `optimum-layerwise inspect` reads the GPT-Q form too
    assert summary["backend"] == "gptq" and summary["layer_bits"] == plan
    assert "GPTQModel, vLLM and SGLang load it" in (tmp_path / "README.md").read_text()

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="auto")
    assert reloaded.config.quantization_config.plan.layer_bits == plan
    assert torch.equal(logits(reloaded), expected)

    from gptqmodel import BACKEND, GPTQModel

    other = GPTQModel.load(str(tmp_path), backend=BACKEND.TORCH, device="cpu")
    theirs = packed_modules(other.model)
    assert theirs.keys() == packed.keys()
    for name, module in packed.items():  # GPTQModel reads the very weights we computed with
        assert theirs[name].bits == module.bits
        for tensor in ("qweight", "qzeros", "g_idx"):
            assert torch.equal(getattr(theirs[name], tensor), getattr(module, tensor)), (name, tensor)
        # GPTQModel casts the float16 scales to the model's dtype
        assert torch.equal(theirs[name].scales, module.scales.to(theirs[name].scales.dtype)), name
    torch.testing.assert_close(logits(other.model), expected, rtol=0.02, atol=0.02)


def test_sequential_calibration_sees_the_quantized_layers_before(tiny_checkpoint, token_batches):
    """Layer 1's GPT-Q statistics come from layer 0's quantized outputs: quantizing layer 0 at 2 instead of 8 bits
    changes layer 1's result even though layer 1's own bits stay the same."""

    def layer_one(first_bits: int) -> torch.Tensor:
        layer_bits = {0: first_bits, 1: 8, 2: 8, 3: 8}
        config = LayerwiseQuantizationConfig(
            bits=(8, 2), backend="gptq", dataset=token_batches, group_size=32, layer_bits=layer_bits
        )
        model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
        return decoder_layers(model)[1].mlp.down_proj.qweight.clone()

    assert not torch.equal(layer_one(8), layer_one(2))


def test_per_channel_grids_quantize_and_reload(tiny_checkpoint, tmp_path, token_batches):
    """`group_size=None` (one scale per output row): gptqmodel's group-aware reordering is off for it."""
    config = LayerwiseQuantizationConfig(
        bits=(4, 2), backend="gptq", dataset=token_batches, group_size=None, importance="zd", num_low_bit_layers=2
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    assert all(module.group_size == module.in_features for module in packed_modules(model).values())  # one group
    expected = logits(model)
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path)), expected)


def test_a_checkpoint_contradicting_its_bit_map_is_refused(tiny_checkpoint, tmp_path, token_batches):
    config = LayerwiseQuantizationConfig(
        bits=(4, 2), backend="gptq", dataset=token_batches, group_size=32, layer_bits={0: 4, 1: 2, 2: 4, 3: 2}
    )
    AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    saved_plan = data["quantization_config"]["layerwise"]["plan"]
    saved_plan["layer_bits"]["1"] = 4
    for name, entry in saved_plan["modules"].items():
        if name.startswith("model.layers.1."):
            entry["bits"] = 4
    path.write_text(json.dumps(data))
    message = r"model\.layers\.1\.\S+\.qweight is \(\d+, \d+\) I32, the model needs \(\d+, \d+\) I32"
    with pytest.raises(ValueError, match=message):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.slow
def test_gptq_beats_round_to_nearest_at_the_same_bit_map_on_the_demo_model():
    """SmolLM2-135M at 3.0 average bits (half of the layers at 2 bits, LIM order): GPT-Q's held-out perplexity is
    lower than quanto's round-to-nearest with the very same bit map."""
    from transformers import AutoTokenizer

    from optimum_layerwise.data.demo_models import resolve_model
    from optimum_layerwise.evaluation.perplexity import perplexity

    path = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    plans, results = {}, {}
    for backend in ("quanto", "gptq"):
        config = LayerwiseQuantizationConfig(
            bits=(4, 2),
            backend=backend,
            target_bits=3.0,
            importance="lim",  # the same order for both backends (sensitivity measures each backend's own error)
            optimizer="max",  # quanto: plain round-to-nearest over each group's range
            dataset="shakespeare",
            tokenizer=tokenizer,
            num_samples=16,
            seq_len=512,
        )
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=config)
        plans[backend] = model.config.quantization_config.plan.layer_bits
        results[backend] = perplexity(model, "kjv", tokenizer, num_windows=8).perplexity
        del model
    assert plans["gptq"] == plans["quanto"] and sorted(plans["gptq"].values()).count(2) == 15
    assert results["gptq"] < results["quanto"], results


def test_four_levels_allocated_by_measured_cost_round_trip(tiny_checkpoint, tmp_path, token_batches):
    """GPT-Q's 8/4/3/2: the exact solver picks among all four levels by cost, and the checkpoint reloads as made."""
    config = LayerwiseQuantizationConfig(
        bits=(8, 4, 3, 2), backend="gptq", importance="sensitivity", dataset=token_batches, group_size=32,
        target_bits=4.25,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    plan = model.config.quantization_config.plan
    assert plan.average_bits <= 4.25 and set(plan.layer_costs[0]) == {8, 4, 3, 2}
    assert {module.bits for module in packed_modules(model).values()} == set(plan.layer_bits.values())
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.quantization_config.plan == plan
    assert torch.equal(logits(reloaded), logits(model))


def test_module_granular_checkpoint_round_trips_through_the_plugin_and_gptqmodel(
    tiny_checkpoint, tmp_path, token_batches
):
    config = LayerwiseQuantizationConfig(
        bits=(8, 4, 2), backend="gptq", dataset=token_batches, group_size=32, granularity="module", target_bits=4.5
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    plan = model.config.quantization_config.plan
    packed = packed_modules(model)
    assert {name: module.bits for name, module in packed.items()} == {n: m.bits for n, m in plan.modules.items()}
    mixed = [i for i in range(4) if len({m.bits for n, m in plan.modules.items() if f".{i}." in n}) > 1]
    assert mixed, "expected at least one layer whose modules have different bits"
    expected = logits(model)
    model.save_pretrained(tmp_path)
    build_tiny_tokenizer().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    for name, module in plan.modules.items():  # GPTQModel's `dynamic` names each module's bits
        overrides = [o["bits"] for p, o in saved["dynamic"].items() if re.match(p.removeprefix("+:"), name)]
        assert overrides == ([] if module.bits == 8 else [module.bits]), name

    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(tmp_path)), expected)
    from gptqmodel import BACKEND, GPTQModel

    other = GPTQModel.load(str(tmp_path), backend=BACKEND.TORCH, device="cpu")
    assert {name: module.bits for name, module in packed_modules(other.model).items()} == {
        name: module.bits for name, module in packed.items()
    }
    torch.testing.assert_close(logits(other.model), expected, rtol=0.02, atol=0.02)


def test_costs_measured_with_gptq_itself_are_below_round_to_nearest(token_batches):
    """Calibrated on each layer's inputs, GPT-Q leaves less output error than rounding on its grid, at every level."""
    from conftest import build_tiny_model
    from optimum_layerwise.data.calibration import calibration_batches
    from optimum_layerwise.importance import measure_unit_costs

    model = build_tiny_model("llama")
    batches = calibration_batches(token_batches, batch_size=3)
    costs = {
        calibrated: measure_unit_costs(
            model, batches, (8, 3, 2), granularity="block", backend="gptq", group_size=32, calibrated=calibrated
        )
        for calibrated in (False, True)
    }
    assert costs[True].keys() == costs[False].keys()
    lower = [(unit, bits) for unit in costs[True] for bits in (3, 2)]
    assert sum(costs[True][u][b] < costs[False][u][b] for u, b in lower) >= 0.9 * len(lower)
