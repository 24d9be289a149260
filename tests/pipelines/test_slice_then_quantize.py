"""One job that slices, then quantizes the sliced model to a byte budget; its checkpoint reloads."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import build_tiny_model, build_tiny_tokenizer
from optimum_layerwise import LayerwiseQuantizationConfig, LayerwiseSlicingConfig, parse_memory
from optimum_layerwise.model.footprint import safetensors_tensor_bytes


PROMPT = torch.tensor([[5, 17, 33, 60, 91, 12, 44]])
CALIBRATION = dict(dataset="shakespeare", num_samples=8, seq_len=64, importance="lim", bits=(8, 4))
BUDGET = "215KB"  # between the 4-bit and 8-bit sizes of the tiny Qwen2, sliced or not


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-qwen2-tied")
    build_tiny_model("qwen2", tie_word_embeddings=True).save_pretrained(folder)
    build_tiny_tokenizer().save_pretrained(folder)
    return folder


def quantized(source, **settings):
    config = LayerwiseQuantizationConfig(
        memory_budget=BUDGET, tokenizer=build_tiny_tokenizer(), **CALIBRATION, **settings
    )
    return AutoModelForCausalLM.from_pretrained(source, quantization_config=config)


@pytest.mark.heavy
def test_the_budget_counts_the_sliced_sizes_and_the_checkpoint_reloads(source, tmp_path):
    plain = quantized(source)
    sliced = quantized(source, slicing=LayerwiseSlicingConfig(sparsity=0.3, num_samples=16, seq_len=64))
    config = sliced.config.quantization_config
    assert config.slicing.plan.sparsity == pytest.approx(0.3, abs=0.02)
    # the allocator saw the sliced sizes, full-precision shortcuts included: on this tiny model they cost more than
    # the slicing saves, so the same bytes buy fewer bits
    assert type(sliced.model.layers[1].attn_shortcut) is torch.nn.Linear
    assert 4 < config.plan.average_bits < plain.config.quantization_config.plan.average_bits
    sliced.save_pretrained(tmp_path)
    assert sum(safetensors_tensor_bytes(tmp_path).values()) <= parse_memory(BUDGET)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(PROMPT).logits, sliced(PROMPT).logits)
    assert reloaded.config.quantization_config.slicing.plan == config.slicing.plan
    assert reloaded.config.quantization_config.plan.layer_bits == config.plan.layer_bits


@pytest.mark.heavy
def test_quantized_shortcuts_buy_more_bits_and_reload(source, tmp_path):
    slicing = LayerwiseSlicingConfig(sparsity=0.3, num_samples=16, seq_len=64)
    kept = quantized(source, slicing=slicing).config.quantization_config
    model = quantized(source, slicing=slicing, quantize_shortcuts=True)
    config = model.config.quantization_config
    assert "model.layers.1.attn_shortcut" in config.plan.modules  # planned and packed with the rest of the layer
    assert type(model.model.layers[1].attn_shortcut) is not torch.nn.Linear
    assert config.plan.average_bits > kept.plan.average_bits  # the bytes the shortcuts no longer take buy bits
    model.save_pretrained(tmp_path)
    assert sum(safetensors_tensor_bytes(tmp_path).values()) <= parse_memory(BUDGET)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.quantization_config.quantize_shortcuts is True
    with torch.no_grad():
        assert torch.equal(reloaded(PROMPT).logits, model(PROMPT).logits)


@pytest.mark.heavy
def test_the_result_is_checked_against_the_original_model(source, caplog):
    quantized(source, slicing=LayerwiseSlicingConfig(sparsity=0.2, num_samples=16, seq_len=64))
    assert any("Sliced and quantized: held-out perplexity" in r.getMessage() and "original" in r.getMessage()
               for r in caplog.records)  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(backend="gptq"), "`slicing` is supported with backend='quanto' only"),
        (dict(low_memory=True), "cannot run with low_memory=True"),
        (dict(slicing_ratio=0.2), "Did you mean `slicing`"),
        (dict(quantize_shortcuts="yes"), "`quantize_shortcuts` must be True or False"),
    ],
)
def test_slicing_with_what_it_cannot_do_is_refused(settings, message):
    slicing = LayerwiseSlicingConfig(sparsity=0.2)
    with pytest.raises(ValueError, match=message):
        LayerwiseQuantizationConfig(slicing=slicing, **settings)


def test_quantizing_shortcuts_without_slicing_is_refused():
    with pytest.raises(ValueError, match="`quantize_shortcuts=True` needs `slicing`"):
        LayerwiseQuantizationConfig(quantize_shortcuts=True)
