"""Checkpoints written by earlier versions of the package still load, with the logits they gave when written.

`tests/fixtures/*-v1` were written by `tests/fixtures/make_checkpoints.py` before the plan became a value of its own
(per-level settings and per-module group-size overrides at the top of the layer-wise config, no `plan` entry).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import optimum_layerwise  # noqa: F401  (registers "layerwise")


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
INPUT_IDS = torch.arange(2 * 16).reshape(2, 16) % 128


def assert_loads_as_written(folder: Path, atol: float = 0.0) -> AutoModelForCausalLM:
    model = AutoModelForCausalLM.from_pretrained(folder)
    expected = load_file(FIXTURES / folder.name / "expected_logits.safetensors")["logits"]
    with torch.no_grad():
        torch.testing.assert_close(model(INPUT_IDS).logits, expected, atol=atol, rtol=0)
    return model


def test_quanto_checkpoint_of_format_v1_loads():
    model = assert_loads_as_written(FIXTURES / "quanto-v1")
    down_proj = model.model.layers[1].mlp.down_proj
    assert down_proj.bits == 4 and down_proj.group_size == 32  # the per-module fallback recorded in the file


def test_quanto_checkpoint_older_than_level_settings_loads(tmp_path):
    """Before `level_settings` were written, the group-size rule was the only record: it still gives the layout."""
    folder = tmp_path / "quanto-v1"
    shutil.copytree(FIXTURES / "quanto-v1", folder)
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]["level_settings"], config["quantization_config"]["group_size_overrides"]
    (folder / "config.json").write_text(json.dumps(config))
    assert_loads_as_written(folder)


@pytest.mark.gptq
def test_gptq_checkpoint_of_format_v1_loads():
    model = assert_loads_as_written(FIXTURES / "gptq-v1", atol=1e-5)
    assert [layer.self_attn.q_proj.bits for layer in model.model.layers] == [4, 2, 4]


def test_quanto_checkpoint_of_the_flat_layout_loads():
    """`quanto-v2` was written by the last version with the flat module layout (plan, quality and card included)."""
    model = assert_loads_as_written(FIXTURES / "quanto-v2")
    assert model.config.quantization_config.plan.quality["verdict"] == "good"


def test_sliced_checkpoint_of_the_flat_layout_loads():
    model = assert_loads_as_written(FIXTURES / "sliced-v1")
    widths = [layer.self_attn.q_proj.in_features for layer in model.model.layers]
    assert tuple(widths) == model.config.quantization_config.plan.widths[: len(widths)] and min(widths) < 64


@pytest.mark.gptq
def test_gptq_checkpoint_of_the_flat_layout_loads():
    model = assert_loads_as_written(FIXTURES / "gptq-v2", atol=1e-5)
    assert sorted({layer.self_attn.q_proj.bits for layer in model.model.layers}) == [2, 4]
