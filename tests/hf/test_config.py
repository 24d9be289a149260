import copy
import dataclasses
import json
import pickle

import pytest
import torch

from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.plan import ModulePlan, QuantizationPlan


def test_defaults_and_json_round_trip():
    assert LayerwiseQuantizationConfig().bits == (8, 4)  # 2-bit layers collapse small models with round-to-nearest
    assert LayerwiseQuantizationConfig().importance == "sensitivity"
    config = LayerwiseQuantizationConfig(bits=(4, 2), importance="zd", target_bits=3.0)
    plan = QuantizationPlan(
        layers_path="model.layers",
        layer_bits={0: 4, 1: 2},
        modules={
            "model.layers.0.mlp.down_proj": ModulePlan(4, 64, False),
            "model.layers.1.mlp.down_proj": ModulePlan(2, None, False),
        },
        layer_scores=[0.5, 0.1],
        budget={"target_bits": 3.0},
    )
    finished = config.with_plan(plan)
    assert config.plan is None and finished.plan is plan  # the request is left as it was
    data = json.loads(finished.to_json_string())
    assert data["layer_bits"] is None and data["plan"]["layer_bits"] == {"0": 4, "1": 2}
    assert data["plan"]["modules"]["model.layers.0.mlp.down_proj"] == {"bits": 4, "group_size": 64, "sym": False}
    again = LayerwiseQuantizationConfig.from_dict(data)
    assert again.plan == plan and again.plan.layer_scores == (0.5, 0.1)
    assert again.bits == (4, 2) and again.target_bits == 3.0
    assert again.to_dict() == finished.to_dict()


def test_a_plan_is_immutable_and_shared_by_copies():
    plan = QuantizationPlan("model.layers", {0: 8}, {"model.layers.0.q": ModulePlan(8, None, True)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.layer_bits = {0: 4}
    with pytest.raises(TypeError):
        plan.layer_bits[0] = 4
    config = LayerwiseQuantizationConfig(importance="zd").with_plan(plan)
    assert copy.deepcopy(config).plan is plan and pickle.loads(pickle.dumps(plan)) == plan


def test_configs_saved_before_the_plan_was_a_value_read_as_a_plan():
    saved = {
        "quant_method": "layerwise",
        "backend": "quanto",
        "bits": [8, 4],
        "target_bits": 6.0,
        "importance": "lim",
        "layer_bits": {"0": 8, "1": 4},
        "layer_scores": [0.3, 0.1],
        "layer_costs": None,
        "level_settings": {"8": {"sym": True, "group_size": None}, "4": {"sym": False, "group_size": 128}},
        "group_size_overrides": None,
        "quality": None,
    }
    config = LayerwiseQuantizationConfig.from_dict(saved)
    assert config.layer_bits is None and config.target_bits == 6.0  # the bit map was the result, not the request
    assert dict(config.plan.layer_bits) == {0: 8, 1: 4} and config.plan.layer_scores == (0.3, 0.1)
    assert config.plan.budget == {"target_bits": 6.0} and not config.plan.modules  # resolved by the loader


def test_tokenizer_and_in_memory_data_are_not_serialized():
    config = LayerwiseQuantizationConfig(dataset=["some text"], tokenizer=object(), num_low_bit_layers=1)
    data = config.to_dict()
    assert "tokenizer" not in data and data["dataset"] is None
    json.dumps(data)
    assert LayerwiseQuantizationConfig(dataset="books.txt", importance="lim").to_dict()["dataset"] == "books.txt"


def test_memory_strings_are_kept_as_given():
    assert LayerwiseQuantizationConfig(importance="zd", memory_budget="500MiB").to_dict()["memory_budget"] == "500MiB"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bits=(4, 3)), r"`bits` \[3\] not supported by backend='quanto'"),
        (dict(bits=(2, 4)), "strictly decreasing"),
        (dict(bits=(4,)), "two to four"),
        (dict(bits=(8, 4, 2, 2)), "strictly decreasing"),
        (dict(bits=(8, 4, 3, 2, 1), backend="gptq"), "two to four"),
        (dict(bits="4,2"), "tuple of ints"),
        (dict(backend="awq"), "`backend` must be one of"),
        (dict(target_bits=9.0), r"`target_bits` must lie in \[4, 8\]"),
        (dict(target_bits=3.0, memory_budget="1GB"), "at most one of"),
        (dict(num_low_bit_layers=2, layer_bits={0: 4}), "`layer_bits` or a budget"),
        (dict(memory_budget="lots"), "memory_budget"),
        (dict(num_low_bit_layers=-1), "num_low_bit_layers"),
        (dict(importance="magic"), "`importance` must be one of"),
        (dict(importance=[1.0, float("inf")]), "finite"),
        (dict(layer_bits={0: 4, 1: 2}), "not among"),
        (dict(layer_bits={"x": 4}), "layer_bits"),
        (dict(group_size=100), "group_size"),
        (dict(num_samples=0), "num_samples"),
        (dict(seq_len=1.5), "seq_len"),
        (dict(modules_to_not_convert="gate_proj"), "modules_to_not_convert"),
        (dict(dataset={"text": "x"}), "dataset"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, message):
    kwargs = {"importance": "zd", **kwargs}
    with pytest.raises(ValueError, match=message):
        LayerwiseQuantizationConfig(**kwargs)


def test_lim_without_data_cannot_quantize():
    config = LayerwiseQuantizationConfig(importance="lim", target_bits=6.0)  # fine to load a saved checkpoint with
    with pytest.raises(ValueError, match="importance='lim' needs calibration data"):
        config.check_quantizable()  # what from_pretrained runs before loading any weight
    # an explicit bit map needs no scoring, hence no data
    LayerwiseQuantizationConfig(importance="lim", layer_bits={0: 8, 1: 4}).check_quantizable()


def test_gptq_is_named_with_its_own_bits():
    config = LayerwiseQuantizationConfig(backend="gptq", bits=(4, 3), importance="zd")
    assert config.bits == (4, 3)


def test_gptq_needs_calibration_data_and_its_options_belong_to_it():
    with pytest.raises(ValueError, match="backend='gptq' quantizes each layer from calibration data"):
        LayerwiseQuantizationConfig(backend="gptq", importance="zd").check_quantizable()
    with pytest.raises(ValueError, match="`desc_act` is a GPT-Q option"):
        LayerwiseQuantizationConfig(importance="zd", desc_act=True)
    with pytest.raises(ValueError, match="optimizer='hqq' .* no symmetric form"):
        LayerwiseQuantizationConfig(importance="zd", optimizer="hqq", sym=True)


def test_sym_defaults_to_each_backends_own_grid():
    assert LayerwiseQuantizationConfig(importance="zd").sym is False
    assert LayerwiseQuantizationConfig(backend="gptq", importance="zd").sym is True
    saved = LayerwiseQuantizationConfig(importance="zd", sym=True).to_dict()
    assert saved["sym"] is True and LayerwiseQuantizationConfig.from_dict(saved).sym is True
    del saved["sym"]  # saved before quanto took `sym`: its grids were affine
    assert LayerwiseQuantizationConfig.from_dict(saved).sym is False
    with pytest.raises(ValueError, match="`sym` must be True or False"):
        LayerwiseQuantizationConfig(backend="gptq", importance="zd", dataset="kjv", sym="yes")


def test_gptq_config_is_saved_as_a_standard_gptq_config_and_read_back():
    from transformers.quantizers.auto import AutoQuantizationConfig
    from transformers.utils.quantization_config import GPTQConfig

    layer_bits = {0: 4, 1: 2, 2: 4, 3: 2}
    plan = QuantizationPlan(
        "model.layers",
        layer_bits,
        {f"model.layers.{i}.mlp.up_proj": ModulePlan(bits, 128, True) for i, bits in layer_bits.items()},
        layer_scores=[3.0, 1.0, 2.0, 0.0],
        budget={"target_bits": 3.0},
    )
    request = LayerwiseQuantizationConfig(backend="gptq", bits=(4, 2), dataset="kjv", target_bits=3.0, desc_act=True)
    config = request.with_plan(plan)
    saved = json.loads(json.dumps(config.to_dict()))
    assert {key: saved[key] for key in ("quant_method", "bits", "group_size", "sym", "desc_act")} == {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 128,
        "sym": True,
        "desc_act": True,
    }
    assert saved["checkpoint_format"] == "gptq"
    assert saved["dynamic"] == {
        r"+:^model\.layers\.(1\..*|3\..*)$": {"bits": 2}
    }  # derived from the plan for GPTQModel
    assert saved["layerwise"]["plan"]["layer_bits"] == {"0": 4, "1": 2, "2": 4, "3": 2}
    assert "dynamic" not in saved["layerwise"] and request.to_dict()["dynamic"] is None

    loaded = AutoQuantizationConfig.from_dict(saved)
    assert isinstance(loaded, LayerwiseQuantizationConfig)
    assert loaded.plan == plan and loaded.desc_act
    assert loaded.to_dict() == saved
    plain = AutoQuantizationConfig.from_dict({"quant_method": "gptq", "bits": 4, "group_size": 128})
    assert type(plain) is not LayerwiseQuantizationConfig and isinstance(plain, GPTQConfig)


def test_three_levels_and_tensor_dataset():
    config = LayerwiseQuantizationConfig(bits=[8, 4, 2], dataset=torch.zeros(2, 4, dtype=torch.long))
    assert config.bits == (8, 4, 2)
    assert config.budget() == {"target_bits": 5.0}


def test_registered_with_transformers():
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AutoQuantizationConfig

    assert AUTO_QUANTIZATION_CONFIG_MAPPING["layerwise"] is LayerwiseQuantizationConfig
    config = AutoQuantizationConfig.from_dict({"quant_method": "layerwise", "importance": "zd", "bits": [8, 4]})
    assert isinstance(config, LayerwiseQuantizationConfig) and config.bits == (8, 4)
