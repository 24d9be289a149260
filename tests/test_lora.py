"""PEFT LoRA on a layer-wise optimum-quanto model, trained by transformers' Trainer: the loss falls, the adapters
learn in every targeted layer, and the packed weights stay packed and unchanged."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.quantize.lora import QuantoLoraLinear, with_layerwise_modules
from optimum_layerwise.quantize.modules import QuantoLinear


def lora_config():
    targets = ["q_proj", "v_proj", "down_proj"]
    return with_layerwise_modules(LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))


def train(model, tmp_path, steps: int = 10) -> list[float]:
    ids = torch.randint(0, 100, (8, 32), generator=torch.Generator().manual_seed(0))
    arguments = TrainingArguments(
        tmp_path / "trainer", max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2, logging_steps=1,
        report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=arguments, train_dataset=[{"input_ids": row, "labels": row} for row in ids])
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_trainer_runs_lora_steps_on_a_quanto_layerwise_model(tiny_checkpoint, tmp_path):
    config = LayerwiseQuantizationConfig(bits=(8, 4), importance="zd", layer_bits={0: 8, 1: 4, 2: 4, 3: 8})
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    frozen = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    peft_model = get_peft_model(model, lora_config())
    wrapped = peft_model.base_model.model.model.layers[1].self_attn.q_proj
    assert isinstance(wrapped, QuantoLoraLinear) and isinstance(wrapped.base_layer, QuantoLinear)
    assert wrapped.base_layer.bits == 4

    losses = train(peft_model, tmp_path)
    assert losses[-1] < losses[0] - 0.05, losses
    for index in range(4):  # the adapters learn in every layer: gradients flow through the packed layers
        assert (
            peft_model.base_model.model.model.layers[index].self_attn.q_proj.lora_B["default"].weight.abs().sum() > 0
        )
    for name, tensor in peft_model.base_model.model.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(tensor, frozen[name.replace(".base_layer", "")]), name  # packed and unchanged
    with pytest.raises(ValueError, match="cannot be merged into packed layer-wise weights"):
        peft_model.merge_and_unload()

    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 17, 33, 2, 90, 41]])
    with torch.no_grad():
        expected = peft_model(ids).logits
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter", config=lora_config())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected)


def test_only_lora_configs_are_accepted():
    with pytest.raises(ValueError, match="must be a peft.LoraConfig"):
        with_layerwise_modules({"r": 8})


@pytest.mark.gptq
def test_trainer_runs_lora_steps_on_a_gptq_layerwise_model(tiny_checkpoint, tmp_path, token_batches):
    """PEFT wraps GPTQModel's packed layers itself; the plugin only has to let Trainer accept the model."""
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
