"""The request is never modified: one config quantizes several models through every entry point, each model gets its
own plan, and the plan written to config.json is the one the loader builds the model from."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

import optimum_layerwise  # noqa: F401  (registers "layerwise")
from conftest import build_tiny_model
from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.cli import main
from optimum_layerwise.hf.compress import quantize_model


def request() -> LayerwiseQuantizationConfig:
    return LayerwiseQuantizationConfig(bits=(4, 2), importance="zd", group_size=32)  # default budget: 3.0 bits


def checkpoints(tmp_path):
    folders = {}
    for depth in (4, 6):
        folders[depth] = tmp_path / f"tiny-{depth}"
        build_tiny_model("llama", num_hidden_layers=depth).save_pretrained(folders[depth])
    return folders


def assert_planned_for(config: LayerwiseQuantizationConfig, depth: int) -> None:
    assert sorted(config.plan.layer_bits.values()) == [2] * (depth // 2) + [4] * (depth - depth // 2)
    assert {name.split(".")[2] for name in config.plan.modules} == {str(i) for i in range(depth)}
    assert config.plan.budget == {"target_bits": 3.0}


def test_one_config_quantizes_models_of_two_depths_through_from_pretrained(tmp_path):
    config, folders = request(), checkpoints(tmp_path)
    before = config.to_dict()
    for depth, folder in folders.items():
        model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)
        assert model.config.quantization_config is not config
        assert_planned_for(model.config.quantization_config, depth)
        assert config.to_dict() == before and config.plan is None and config.target_bits is None


def test_one_config_quantizes_models_of_two_depths_through_quantize_model():
    config = request()
    before = config.to_dict()
    for depth in (4, 6):
        model = build_tiny_model("llama", num_hidden_layers=depth)
        result = quantize_model(model, config)
        assert result is not config and model.config.quantization_config is result
        assert_planned_for(result, depth)
        assert config.to_dict() == before and config.plan is None


def test_the_cli_plans_each_model_on_its_own(tmp_path, capsys):
    folders = checkpoints(tmp_path)
    for depth, folder in folders.items():
        output = tmp_path / f"out-{depth}"
        argv = [
            "--quiet",
            "quantize",
            str(folder),
            "--output",
            str(output),
            "--importance",
            "zd",
            "--group-size",
            "32",
        ]
        assert main([*argv, "--bits", "4,2"]) == 0, capsys.readouterr().err
        saved = LayerwiseQuantizationConfig.from_dict(
            json.loads((output / "config.json").read_text())["quantization_config"]
        )
        assert_planned_for(saved, depth)


def test_the_loader_builds_each_module_from_its_plan_entry(tmp_path):
    """The reloaded plan is the saved one, and every module is rebuilt with the group size of its entry."""
    folder = tmp_path / "q"
    config = LayerwiseQuantizationConfig(bits=(8, 4), layer_bits={0: 4, 1: 4, 2: 8, 3: 8}, group_size=32)
    model = AutoModelForCausalLM.from_pretrained(checkpoints(tmp_path)[4], quantization_config=config)
    model.save_pretrained(folder)
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    assert reloaded.config.quantization_config.plan == model.config.quantization_config.plan
    name = "model.layers.0.mlp.down_proj"
    assert reloaded.get_submodule(name).group_size == model.config.quantization_config.plan.modules[name].group_size
    tokens = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(reloaded(tokens).logits, model(tokens).logits)


@pytest.mark.heavy
def test_loading_reaches_neither_planning_nor_scoring():
    code = (
        "import sys, optimum_layerwise.hf.loading, optimum_layerwise.hf.config\n"
        "heavy = ['pipelines', 'quantize.sequential', 'importance.scoring', 'importance.lim', 'evaluation']\n"
        "loaded = [name for name in heavy if 'optimum_layerwise.' + name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
