"""End to end through transformers: quantize on load, save, reload (with and without device maps)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from conftest import OFFLOAD_DEVICE_MAP
from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.model.footprint import tensor_nbytes
from optimum_layerwise.quantize.modules import QuantoLinear


INPUT = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(5))


def logits(model):
    with torch.no_grad():
        return model(INPUT).logits


def module_bits(model) -> dict[int, set[int]]:
    return {
        index: {module.bits for module in layer.modules() if isinstance(module, QuantoLinear)}
        for index, layer in enumerate(model.model.layers)
    }


def quantize(folder, **kwargs):
    config = LayerwiseQuantizationConfig(**{"bits": (4, 2), "group_size": 32, **kwargs})
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)


@pytest.mark.heavy
@pytest.mark.parametrize("tiny_checkpoint", ["llama", "mistral", "qwen2", "gemma3"], indirect=True)
def test_round_trip_every_architecture(tiny_checkpoint, token_batches, tmp_path):
    model = quantize(tiny_checkpoint, bits=(4, 2), target_bits=3.0, importance="lim", dataset=token_batches)
    config = model.config.quantization_config
    assert sorted(config.plan.layer_bits.values()) == [2, 2, 4, 4]
    assert len(config.plan.layer_scores) == 4
    assert module_bits(model) == {index: {bits} for index, bits in config.plan.layer_bits.items()}
    # the two layers LIM scores highest keep 4 bits
    ranked = sorted(range(4), key=lambda i: -config.plan.layer_scores[i])
    assert {config.plan.layer_bits[i] for i in ranked[:2]} == {4}
    expected = logits(model)
    assert not torch.allclose(expected, logits(AutoModelForCausalLM.from_pretrained(tiny_checkpoint)), atol=1e-3)

    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "layerwise"
    assert saved["plan"]["layer_bits"] == {str(i): b for i, b in config.plan.layer_bits.items()}
    assert saved["layer_bits"] is None  # the request had a budget; the bit map is the plan's
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.config.quantization_config.plan.layer_bits == config.plan.layer_bits
    assert again.config.quantization_config.plan.layer_scores == pytest.approx(config.plan.layer_scores)
    assert torch.equal(logits(again), expected)
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(tmp_path, device_map="auto")), expected)


def test_reload_with_disk_offload(tiny_checkpoint, tmp_path):
    model = quantize(tiny_checkpoint, importance="zd", num_low_bit_layers=2)
    expected = logits(model)
    model.save_pretrained(tmp_path / "saved")
    offloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "saved", device_map=OFFLOAD_DEVICE_MAP, offload_folder=str(tmp_path / "offload")
    )
    assert offloaded.model.layers[1].self_attn.q_proj.weight.is_meta  # really offloaded
    assert torch.equal(logits(offloaded), expected)


def test_explicit_layer_bits_skip_scoring(tiny_checkpoint):
    model = quantize(tiny_checkpoint, bits=(8, 4, 2), layer_bits={0: 8, 1: 2, 2: 4, 3: 8})
    assert module_bits(model) == {0: {8}, 1: {2}, 2: {4}, 3: {8}}
    assert model.config.quantization_config.plan.layer_scores is None


def test_memory_budget_is_met_to_the_byte(tiny_checkpoint):
    full = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    all_low = tensor_nbytes(quantize(tiny_checkpoint, importance="zd", num_low_bit_layers=4))
    one_high = tensor_nbytes(quantize(tiny_checkpoint, importance="zd", num_low_bit_layers=3))
    layer_step = one_high - all_low
    budget = all_low + 2 * layer_step + layer_step // 2  # room for two layers at 4 bits, not three
    model = quantize(tiny_checkpoint, importance="zd", memory_budget=budget)
    assert sorted(model.config.quantization_config.plan.layer_bits.values()) == [2, 2, 4, 4]
    assert tensor_nbytes(model) == all_low + 2 * layer_step <= budget < tensor_nbytes(full)
    with pytest.raises(ValueError, match="below the smallest model"):
        quantize(tiny_checkpoint, importance="zd", memory_budget=all_low - 1)


def test_default_budget_is_written_down(tiny_checkpoint):
    model = quantize(tiny_checkpoint, importance="random", seed=3)
    config = model.config.quantization_config
    assert config.target_bits is None and config.plan.budget == {"target_bits": 3.0}
    assert sorted(config.plan.layer_bits.values()) == [2, 2, 4, 4]


def test_modules_to_not_convert_stay_full_precision(tiny_checkpoint, tmp_path):
    model = quantize(tiny_checkpoint, importance="depth", num_low_bit_layers=2, modules_to_not_convert=["gate_proj"])
    assert all(type(layer.mlp.gate_proj) is nn.Linear for layer in model.model.layers)
    assert type(model.lm_head) is nn.Linear and type(model.model.embed_tokens) is nn.Embedding
    expected = logits(model)
    model.save_pretrained(tmp_path)
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(tmp_path)), expected)


def test_layer_bits_for_missing_layers(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"names layers \[7\]"):
        quantize(tiny_checkpoint, layer_bits={0: 4, 1: 4, 2: 2, 3: 2, 7: 2})


def test_wrong_score_count(tiny_checkpoint):
    with pytest.raises(ValueError, match="has 3 scores but the model has 4"):
        quantize(tiny_checkpoint, importance=[1.0, 2.0, 3.0], num_low_bit_layers=1)


def test_checkpoint_not_matching_its_bit_map_is_refused(tiny_checkpoint, tmp_path):
    quantize(tiny_checkpoint, importance="depth", layer_bits={0: 4, 1: 4, 2: 2, 3: 2}).save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    data = json.loads(config_path.read_text())
    data["quantization_config"]["plan"]["modules"]["model.layers.0.self_attn.q_proj"]["bits"] = 2
    config_path.write_text(json.dumps(data))
    message = r"does not match its model and quantization_config \(plan: bits, group sizes\): model.layers.0"
    with pytest.raises(ValueError, match=message):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_save_refuses_a_model_that_contradicts_its_plan(tiny_checkpoint, tmp_path):
    model = quantize(tiny_checkpoint, importance="zd", num_low_bit_layers=2)
    config = model.config.quantization_config
    wrong = config.plan.modules["model.layers.0.self_attn.q_proj"]
    other = 6 - wrong.bits  # the other level of (4, 2): a plan the checks of the config accept
    modules = {**config.plan.modules, "model.layers.0.self_attn.q_proj": dataclasses.replace(wrong, bits=other)}
    model.config.quantization_config = model.hf_quantizer.quantization_config = config.with_plan(
        config.plan.replace(modules=modules)
    )
    with pytest.raises(ValueError, match=f"q_proj holds {wrong.bits}-bit weights but the plan says {other}"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists() and not os.listdir(tmp_path)  # nothing half-written that could load


@pytest.mark.heavy
def test_loading_without_the_plugin_fails_loudly(tiny_checkpoint, tmp_path):
    """Without `import optimum_layerwise`, transformers must not hand back a model with random weights."""
    quantize(tiny_checkpoint, bits=(8, 4, 2), layer_bits={0: 8, 1: 4, 2: 2, 3: 8}).save_pretrained(tmp_path)
    code = f"from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "size mismatch" in result.stdout + result.stderr or "MISMATCH" in result.stdout + result.stderr
    for layer in range(4):  # every bit width, int8 included, has a shape the stock Linear cannot take
        assert (
            f"model.layers.{layer}" in result.stdout + result.stderr or "{0, 1, 2, 3}" in result.stdout + result.stderr
        )


def test_push_to_hub_uploads_the_packed_checkpoint(tiny_checkpoint, monkeypatch):
    """`push_to_hub` runs the real transformers/huggingface_hub code; only the network calls are intercepted."""
    import huggingface_hub
    from huggingface_hub import HfApi

    uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        for operation in operations:
            source = operation.path_or_fileobj
            uploaded[operation.path_in_repo] = open(source, "rb").read() if isinstance(source, str) else source
        return None

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    model = quantize(tiny_checkpoint, importance="zd", num_low_bit_layers=2)
    model.push_to_hub("someone/tiny-layerwise")
    assert "model.safetensors" in uploaded
    config = json.loads(uploaded["config.json"])
    assert config["quantization_config"]["plan"]["layer_bits"] == {
        str(i): b for i, b in model.config.quantization_config.plan.layer_bits.items()
    }


@pytest.mark.heavy
def test_import_registers_once_even_when_reimported():
    code = (
        "import importlib, sys, optimum_layerwise\n"
        "importlib.reload(optimum_layerwise)\n"
        "for name in [m for m in sys.modules if m.startswith('optimum_layerwise')]: del sys.modules[name]\n"
        "import optimum_layerwise\n"
        "from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING as Q\n"
        "assert Q['layerwise'] is optimum_layerwise.LayerwiseHfQuantizer\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.heavy
@pytest.mark.parametrize(
    "first_import",
    ["optimum_layerwise.hf.quantizer", "optimum_layerwise.hf.slicing_quantizer", "optimum_layerwise.hf.registration"],
)
def test_registers_when_a_module_registration_needs_is_imported_first(first_import):
    # the module's own imports load transformers' quantizer registry, whose import hook must not re-enter it half-run
    code = (
        f"import {first_import}\n"
        "from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING as Q\n"
        "from optimum_layerwise import LayerwiseHfQuantizer\n"
        "assert Q['layerwise'] is LayerwiseHfQuantizer and 'layerwise_slicing' in Q\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sensitivity_costs_are_saved_and_reused_for_another_budget(tiny_checkpoint, token_batches, tmp_path):
    model = quantize(tiny_checkpoint, bits=(8, 4), target_bits=6.0, importance="sensitivity", dataset=token_batches)
    config = model.config.quantization_config
    assert sorted(config.plan.layer_costs) == [0, 1, 2, 3] and all(
        set(c) == {8, 4} for c in config.plan.layer_costs.values()
    )
    cheapest = sorted(range(4), key=lambda i: config.plan.layer_costs[i][4])[:2]
    assert {config.plan.layer_bits[i] for i in cheapest} == {4}
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]["plan"]["layer_costs"]
    assert saved["0"]["8"] == 0.0

    costs = AutoModelForCausalLM.from_pretrained(tmp_path).config.quantization_config.plan.layer_costs
    replanned = quantize(
        tiny_checkpoint, bits=(8, 4), num_low_bit_layers=3, importance="sensitivity", layer_costs=costs
    )
    assert sorted(replanned.config.quantization_config.plan.layer_bits.values()) == [4, 4, 4, 8]


def test_imatrix_quantizes_from_the_calibration_inputs_and_round_trips(tiny_checkpoint, token_batches, tmp_path):
    """optimizer="imatrix" (the default with data): costs measured and layers packed by the importance-weighted search,
    layer by layer from the calibration data; the checkpoint is an ordinary quanto one (only scales and shifts
    differ)."""
    settings = {"bits": (8, 4, 2), "target_bits": 4.0, "granularity": "module", "dataset": token_batches}
    model = quantize(tiny_checkpoint, **settings)  # the default with calibration data
    assert model.config.quantization_config.optimizer == "imatrix"
    plan = model.config.quantization_config.plan
    assert plan.unit_costs and plan.average_bits <= 4.0
    by_range = quantize(tiny_checkpoint, unit_costs=plan.unit_costs, optimizer="max", **settings)
    assert by_range.config.quantization_config.plan.modules == plan.modules  # same bit map, other scales
    expected = logits(model)
    assert not torch.allclose(expected, logits(by_range), atol=1e-4)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["optimizer"] == "imatrix"
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(tmp_path)), expected)
