"""PEFT LoRA on a layer-wise optimum-quanto model with stock tools only: a plain `LoraConfig` (no helper of ours),
`get_peft_model` + transformers' Trainer, `model.add_adapter`, and `PeftModel.from_pretrained` on a freshly loaded
checkpoint. The loss falls, the adapters learn in every targeted layer, and the packed weights stay frozen, packed and
unchanged."""

import importlib.metadata

import pytest
import torch
import transformers.integrations.peft as transformers_peft
from packaging.version import Version
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from conftest import save_layerwise
from optimum_layerwise.model.layers import is_float_linear, linear_modules
from optimum_layerwise.quantize.modules import QuantoLinear


LAYER_BITS = {0: 8, 1: 4, 2: 4, 3: 8}
IDS = torch.tensor([[5, 17, 33, 2, 90, 41]])


@pytest.fixture
def layerwise_checkpoint(tiny_checkpoint, tmp_path):
    """A saved layer-wise quanto checkpoint (8- and 4-bit layers) of the tiny Llama."""
    folder = tmp_path / "layerwise"
    save_layerwise(tiny_checkpoint, folder, bits=(8, 4), importance="zd", layer_bits=LAYER_BITS)
    return folder


def packed_state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def train(model, tmp_path, steps: int = 10) -> list[float]:
    ids = torch.randint(0, 100, (8, 32), generator=torch.Generator().manual_seed(0))
    arguments = TrainingArguments(
        tmp_path / "trainer", max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2, logging_steps=1,
        report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=arguments, train_dataset=[{"input_ids": row, "labels": row} for row in ids])
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def assert_packed_and_unchanged(model, before: dict[str, torch.Tensor]) -> None:
    """Every non-LoRA tensor is the one loaded (keys as saved, PEFT's `.base_layer` removed) and frozen."""
    after = {name.replace(".base_layer", ""): tensor for name, tensor in model.state_dict().items()}
    assert {name for name in after if "lora_" not in name} == set(before)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == ("lora_" in name), name


def test_packed_linears_are_linears_but_not_float_linears(layerwise_checkpoint):
    model = AutoModelForCausalLM.from_pretrained(layerwise_checkpoint)
    layer = model.model.layers[1]
    assert isinstance(layer.self_attn.q_proj, QuantoLinear) and isinstance(layer.self_attn.q_proj, torch.nn.Linear)
    assert not is_float_linear(layer.self_attn.q_proj) and is_float_linear(model.lm_head)
    assert linear_modules(layer) == {}  # nothing left to quantize again
    # the packed tensors only: no float weight of nn.Linear's, no new parameter or buffer
    assert set(layer.self_attn.q_proj.state_dict()) == {"weight", "weight_scale", "weight_shift"}
    assert set(model.model.layers[0].self_attn.q_proj.state_dict()) == {"weight", "weight_scale"}
    assert layer.self_attn.q_proj.weight.dtype == torch.uint8


def test_plain_lora_config_trains_and_the_adapter_reloads(layerwise_checkpoint, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(layerwise_checkpoint)
    before = packed_state(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    wrapped = peft_model.base_model.model.model.layers[1].self_attn.q_proj
    assert type(wrapped) is PeftLoraLinear and isinstance(wrapped.base_layer, QuantoLinear)
    assert wrapped.base_layer.bits == 4 and wrapped.lora_A["default"].weight.dtype == torch.float32

    losses = train(peft_model, tmp_path)
    assert losses[-1] < losses[0] - 0.05, losses
    for layer in peft_model.base_model.model.model.layers:  # gradients flow through the packed layers
        assert layer.self_attn.q_proj.lora_B["default"].weight.abs().sum() > 0
    assert_packed_and_unchanged(peft_model.base_model.model, before)
    with pytest.raises(RuntimeError):  # PEFT would add the update to the packed codes: refused, nothing changed
        peft_model.merge_and_unload()
    assert_packed_and_unchanged(peft_model.base_model.model, before)

    peft_model.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        expected = peft_model(IDS).logits
    fresh = AutoModelForCausalLM.from_pretrained(layerwise_checkpoint)  # the saved checkpoint, loaded anew
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")  # a plain reload: no config passed
    assert isinstance(reloaded.base_model.model.model.layers[1].self_attn.q_proj.base_layer, QuantoLinear)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, expected)


def test_transformers_add_adapter(layerwise_checkpoint, monkeypatch, tmp_path):
    """transformers' own adapter API: train, save the adapter with `save_pretrained`, load it with `load_adapter`.
    transformers 5.25 asks for PEFT >= 0.22 in `add_adapter`, newer than the PEFT this environment has: then the
    version check alone is skipped, the rest of `add_adapter` runs as is."""
    if Version(importlib.metadata.version("peft")) < Version(transformers_peft.MIN_PEFT_VERSION):
        monkeypatch.setattr(transformers_peft, "check_peft_version", lambda min_version: None)
    model = AutoModelForCausalLM.from_pretrained(layerwise_checkpoint)
    before = packed_state(model)
    with torch.no_grad():
        base_logits = model(IDS).logits
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert type(model.model.layers[2].self_attn.v_proj) is PeftLoraLinear
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 100, (4, 32), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(5):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert_packed_and_unchanged(model, before)
    assert set(model.get_adapter_state_dict()) == {
        f"model.layers.{index}.self_attn.{name}.lora_{part}.weight"
        for index in range(4)
        for name in ("q_proj", "v_proj")
        for part in "AB"
    }
    with torch.no_grad():
        adapted_logits = model(IDS).logits
    model.save_pretrained(tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    assert not list((tmp_path / "adapter").glob("model*.safetensors"))  # the packed base stays where it is
    model.disable_adapters()
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, base_logits)
    reloaded = AutoModelForCausalLM.from_pretrained(layerwise_checkpoint)
    reloaded.load_adapter(tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, adapted_logits)


def test_with_layerwise_modules_is_a_warning_no_op(layerwise_checkpoint):
    from optimum_layerwise.quantize.lora import with_layerwise_modules

    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    with pytest.warns(FutureWarning, match="no longer needed"):
        assert with_layerwise_modules(config) is config
    assert not config._custom_modules
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(layerwise_checkpoint), config)
    assert type(peft_model.base_model.model.model.layers[0].self_attn.q_proj) is PeftLoraLinear
    with pytest.warns(FutureWarning, match="QuantoLoraLinear is no longer used"):
        from optimum_layerwise.quantize.lora import QuantoLoraLinear
    assert QuantoLoraLinear is PeftLoraLinear


@pytest.mark.gptq
def test_trainer_runs_lora_steps_on_a_gptq_layerwise_model(tiny_checkpoint, tmp_path, token_batches):
    """PEFT wraps GPTQModel's packed layers itself; the plugin only has to let Trainer accept the model."""
    from optimum_layerwise import LayerwiseQuantizationConfig

    config = LayerwiseQuantizationConfig(
        bits=(4, 2), backend="gptq", importance="zd", dataset=token_batches, group_size=32, num_low_bit_layers=2
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    frozen = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert type(peft_model.base_model.model.model.layers[0].self_attn.q_proj).__name__ == "GPTQLoraLinear"
    losses = train(peft_model, tmp_path)
    assert losses[-1] < losses[0] - 0.05, losses
    for name, tensor in peft_model.base_model.model.state_dict().items():
        original = name.replace(".base_layer", "").replace(".quant_linear_module", "")
        if "lora_" not in name:
            assert torch.equal(tensor, frozen[original]), name
