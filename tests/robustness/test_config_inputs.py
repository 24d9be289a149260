"""Every argument is read as meant or refused with a message naming it: no silent defaults, no deep stack traces."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_layerwise import LayerwiseQuantizationConfig, compute_importance
from optimum_layerwise.hf.config import QUANT_METHOD


def test_importance_as_a_mapping_is_read_by_layer(tiny_checkpoint):
    scores = {3: 0.9, 0: 0.1, 1: 0.2, 2: 0.8}  # keys deliberately out of order
    config = LayerwiseQuantizationConfig(bits=(4, 2), importance=scores, num_low_bit_layers=2, group_size=32)
    assert config.importance == [0.1, 0.2, 0.8, 0.9]
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    assert model.config.quantization_config.plan.layer_bits == {0: 2, 1: 2, 2: 4, 3: 4}
    assert compute_importance(model, {"1": 5.0, "0": 7.0, "2": 1.0, "3": 0.0}) == [7.0, 5.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "importance, message",
    [
        ({0: 0.1, 2: 0.3}, "every decoder layer 0..N-1"),
        ({"a": 0.1}, "map decoder-layer indices to scores"),
        ({0: float("nan"), 1: 0.2}, "finite numbers"),
        (42, "a method name, a list of scores"),
    ],
)
def test_bad_importance_is_refused(importance, message):
    with pytest.raises(ValueError, match=message):
        LayerwiseQuantizationConfig(importance=importance)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_bit": 2.0}, "unknown argument ['target_bit']. Did you mean `target_bits`?"),
        ({"group": 64}, "Did you mean `group_size`?"),
        ({"xyzzy": "x"}, "Known arguments:"),
        ({"quant_method": "gptq"}, "`quant_method` of a LayerwiseQuantizationConfig is 'layerwise'"),
    ],
)
def test_unknown_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError) as error:
        LayerwiseQuantizationConfig(**kwargs)
    assert message in str(error.value)


def test_saved_configs_with_settings_of_another_version_still_load(caplog):
    saved = LayerwiseQuantizationConfig(bits=(4, 2), importance="zd", layer_bits={0: 4, 1: 2}).to_dict()
    with caplog.at_level(logging.WARNING):
        config = LayerwiseQuantizationConfig.from_dict({**saved, "old_setting": 1, "sym": True})
    assert config.layer_bits == {0: 4, 1: 2} and "old_setting" in caplog.text
    assert config.quant_method == QUANT_METHOD


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": 2**70}, "`seed` must be an int in [0, 2**63)"),
        ({"seed": -1}, "`seed` must be an int in [0, 2**63)"),
        ({"memory_budget": float("nan")}, "finite number of bytes"),
        ({"memory_budget": float("inf")}, "finite number of bytes"),
        ({"memory_budget": "9" * 400}, "finite number of bytes"),
        ({"memory_budget": 10**400}, "finite number of bytes"),
        ({"memory_budget": 0.5}, "at least 1 byte"),
        ({"memory_budget": "0.0000001KB"}, "at least 1 byte"),
        ({"verify": "yes"}, "`verify` must be True or False"),
    ],
)
def test_out_of_range_values_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError) as error:
        LayerwiseQuantizationConfig(importance="zd", **kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize("token", [128, 10**6, -1])
def test_token_ids_outside_the_vocabulary_are_named(tiny_checkpoint, token):
    data = [[5, 6, 7, token]]
    config = LayerwiseQuantizationConfig(importance="lim", dataset=data, num_low_bit_layers=2, group_size=32)
    with pytest.raises(
        ValueError, match=rf"`dataset` holds token id {token}, outside the model's vocabulary \[0, 128\)"
    ):
        AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)


def test_tiny_calibration_data_and_unmatched_module_names_are_warned_about(tiny_checkpoint, caplog):
    config = LayerwiseQuantizationConfig(
        importance="lim",
        dataset=[[5]],
        num_low_bit_layers=2,
        group_size=32,
        modules_to_not_convert=["down_proj", "no_such_proj"],
    )
    with caplog.at_level(logging.WARNING):
        AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    assert "holds only 1 tokens, less than one window of seq_len=512" in caplog.text
    assert "names ['no_such_proj'] match no Linear module" in caplog.text


def test_a_local_dataset_path_is_never_recorded(tiny_checkpoint, tmp_path):
    secret = tmp_path / "home" / "alice" / "private-notes"
    secret.mkdir(parents=True)
    (secret / "book.txt").write_text("It was the best of times. " * 200)
    config = LayerwiseQuantizationConfig(importance="lim", dataset=str(secret / "book.txt"), group_size=32)
    saved = config.to_dict()
    assert saved["dataset"] == "book.txt" and len(saved["dataset_sha256"]) == 64
    assert "alice" not in config.to_json_string()
    assert LayerwiseQuantizationConfig(importance="lim", dataset="shakespeare").to_dict()["dataset"] == "shakespeare"


def test_the_saved_config_says_what_was_applied(tiny_checkpoint):
    """quanto's int4 is asymmetric and its int8 symmetric per channel; a group size that does not divide a layer's
    inputs falls back (the tiny model has 64 and 160 inputs: group 128 becomes per channel and 32)."""
    config = LayerwiseQuantizationConfig(bits=(8, 4), importance="zd", layer_bits={0: 8, 1: 4, 2: 4, 3: 8})
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    saved = model.config.quantization_config.to_dict()
    assert saved["sym"] is False and "desc_act" not in saved  # quanto's grids are affine unless sym=True
    modules = saved["plan"]["modules"]
    assert modules["model.layers.0.mlp.down_proj"] == {"bits": 8, "group_size": None, "sym": True}
    assert modules["model.layers.1.mlp.down_proj"] == {"bits": 4, "group_size": 32, "sym": False}
    assert modules["model.layers.1.mlp.up_proj"] == {"bits": 4, "group_size": None, "sym": False}  # 64 inputs
    assert len(modules) == 4 * 7
    for name, module in model.named_modules():
        if name in modules:
            assert (module.bits, module.group_size) == (modules[name]["bits"], modules[name]["group_size"])


def test_a_config_without_budget_or_data_is_fine_for_loading_only():
    config = LayerwiseQuantizationConfig(verify=True)
    assert config.get_loading_attributes() == {"verify": True} and "verify" not in config.to_dict()
    with pytest.raises(ValueError, match="needs calibration data"):
        config.check_quantizable()


def test_reusing_a_tensor_dataset_keeps_int_ids():
    assert (
        LayerwiseQuantizationConfig(importance="lim", dataset=torch.zeros(2, 8, dtype=torch.long)).dataset is not None
    )
