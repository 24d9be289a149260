"""Slicing on load with `LayerwiseSlicingConfig`, saving, and reloading the sliced checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from conftest import build_tiny_tokenizer
from optimum_layerwise import LayerwiseSlicingConfig


PROMPT = torch.tensor([[5, 17, 33, 60, 91, 12, 44]])
TEXT_SETTINGS = dict(dataset="shakespeare", num_samples=16, seq_len=64)


def logits(model):
    with torch.no_grad():
        return model(PROMPT).logits


@pytest.fixture(scope="module", params=["untied", "tied"])
def sliced(tmp_path_factory, request):
    """The tiny Qwen2 (with its own head, or tied embeddings as Qwen2.5-0.5B has) sliced by LIM at 25% and saved; the
    sliced model, its folder and the source folder."""
    from conftest import build_tiny_model

    source = tmp_path_factory.mktemp("tiny-qwen2")
    build_tiny_model("qwen2", tie_word_embeddings=request.param == "tied").save_pretrained(source)
    build_tiny_tokenizer().save_pretrained(source)
    config = LayerwiseSlicingConfig(sparsity=0.25, tokenizer=build_tiny_tokenizer(), **TEXT_SETTINGS)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=config)
    folder = tmp_path_factory.mktemp("sliced")
    model.save_pretrained(folder)
    return model, folder, source


@pytest.mark.heavy
def test_the_plan_meets_the_target_and_is_saved(sliced):
    model, folder, _ = sliced
    plan = model.config.quantization_config.plan
    assert plan.sparsity == pytest.approx(0.25)
    assert len(set(plan.widths)) > 1  # LIM gives the layers different widths
    assert all(width % 8 == 0 for width in plan.widths)
    assert plan.quality["verdict"] in ("good", "degraded", "collapsed") and plan.quality["dataset"] == "shakespeare"
    saved = json.loads((folder / "config.json").read_text())
    assert saved["quantization_config"]["quant_method"] == "layerwise_slicing"
    assert saved["quantization_config"]["plan"]["widths"] == list(plan.widths)
    assert saved["tie_word_embeddings"] is not plan.embeddings_rotated
    assert plan.embeddings_rotated is not model.config.tie_word_embeddings


def test_the_checkpoint_holds_plain_float_tensors_of_the_sliced_shapes(sliced):
    model, folder, _ = sliced
    widths = model.config.quantization_config.plan.widths
    with safe_open(str(folder / "model.safetensors"), "pt") as checkpoint:
        dtypes = {checkpoint.get_slice(name).get_dtype() for name in checkpoint.keys()}
        assert dtypes == {"F32"}
        embedding_width = widths[0] if model.config.quantization_config.plan.embeddings_rotated else 64
        assert checkpoint.get_slice("model.embed_tokens.weight").get_shape() == [128, embedding_width]
        assert checkpoint.get_slice("model.layers.1.attn_shortcut.weight").get_shape() == [widths[1], widths[1]]
        assert checkpoint.get_slice("model.layers.1.mlp_shortcut.weight").get_shape() == [widths[2], widths[1]]


@pytest.mark.parametrize("device_map", [None, "auto", "disk"])
def test_the_checkpoint_reloads_with_identical_logits(sliced, device_map, tmp_path):
    model, folder, _ = sliced
    options = {"device_map": "auto"} if device_map == "auto" else {}
    if device_map == "disk":  # a budget smaller than one layer: decoder layers offloaded to disk
        options = {"device_map": "auto", "max_memory": {"cpu": 60_000}, "offload_folder": str(tmp_path)}
    reloaded = AutoModelForCausalLM.from_pretrained(folder, **options)
    assert torch.equal(logits(reloaded), logits(model))
    assert reloaded.config.quantization_config.plan == model.config.quantization_config.plan


def test_the_parameters_are_fewer(sliced):
    model, _, source = sliced
    original = AutoModelForCausalLM.from_pretrained(source)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in original.parameters())


@pytest.mark.heavy
def test_slicing_nothing_keeps_the_logits_and_says_the_model_grew(sliced, caplog):
    _, _, source = sliced
    config = LayerwiseSlicingConfig(sparsity=0.0, tokenizer=build_tiny_tokenizer(), **TEXT_SETTINGS)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=config)
    assert torch.allclose(logits(model), logits(AutoModelForCausalLM.from_pretrained(source)), atol=1e-5, rtol=0)
    assert "Slicing did not make the model smaller" in caplog.text  # the shortcuts were added, nothing removed


@pytest.mark.heavy
def test_constant_slicing_gives_every_layer_the_same_width(sliced):
    _, _, source = sliced
    config = LayerwiseSlicingConfig(
        sparsity=0.25, importance="constant", tokenizer=build_tiny_tokenizer(), quality_windows=0, **TEXT_SETTINGS
    )
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=config)
    plan = model.config.quantization_config.plan
    assert plan.widths == (48, 48, 48, 48) and plan.scores is None
    assert plan.head_width == (48 if plan.embeddings_rotated else 64)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(sparsity=0.95), r"`sparsity` must be in \[0, 0.9\]"),
        (dict(sparsity="25%"), "`sparsity` must be a number"),
        (dict(sparsity=0.2, base=0.3), r"`base` must be a number in \[0, sparsity=0.2\]"),
        (dict(importance="lim_reverse"), "importance"),
        (dict(round_to=0), "`round_to` must be a positive int"),
        (dict(sparsity_ratio=0.2), "Did you mean `sparsity`"),
        (dict(num_samples=0), "`num_samples` must be a positive int"),
    ],
)
def test_bad_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        LayerwiseSlicingConfig(**settings)


def test_slicing_without_data_is_refused_before_loading(sliced):
    _, _, source = sliced
    with pytest.raises(ValueError, match="pass `dataset`"):
        AutoModelForCausalLM.from_pretrained(source, quantization_config=LayerwiseSlicingConfig(sparsity=0.2))


def test_a_reloaded_sliced_model_trains_with_peft_lora(sliced):
    """Sliced layers hold plain Linear modules (the shortcuts too): PEFT wraps them as it wraps any model."""
    from peft import LoraConfig, get_peft_model

    _, folder, _ = sliced
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(folder), LoraConfig(r=4, target_modules=["q_proj", "attn_shortcut"])
    )
    model(PROMPT, labels=PROMPT).loss.backward()
    trained = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert trained and all("lora_" in name for name in trained)
    assert any("attn_shortcut.lora_" in name for name in trained)
