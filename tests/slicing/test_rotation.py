"""Rotation and slicing of the residual stream: exact at ratio 0, refused where a rotation cannot pass."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen3Config

from conftest import COMMON, build_tiny_model
from optimum_layerwise.data.calibration import batch_windows
from optimum_layerwise.plan.slicing_plan import SlicingPlan
from optimum_layerwise.slicing.architecture import check_sliceable
from optimum_layerwise.slicing.rotation import rotate_and_slice


WINDOWS = [[(7 * i + 3 * j) % 120 + 4 for j in range(40)] for i in range(8)]
PROMPT = torch.tensor([[5, 17, 33, 60, 91, 12, 44]])


def build(arch: str) -> torch.nn.Module:
    if arch == "qwen3":
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(Qwen3Config(**COMMON, head_dim=16), dtype=torch.float32).eval()
    return build_tiny_model(arch)


def plan(widths: list[int], head_width: int, embeddings_rotated: bool = True) -> SlicingPlan:
    return SlicingPlan(64, tuple(widths), head_width, (0.0,) * len(widths), embeddings_rotated=embeddings_rotated)


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(PROMPT).logits


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3"])
def test_rotation_without_slicing_keeps_the_logits(arch):
    """The float32 tiny models' logits are at most 0.6 in magnitude; rotated in float64 and stored in float32 they
    move by at most 1e-5."""
    model = build(arch)
    before = logits(model)
    rotate_and_slice(model, plan([64] * 4, 64), batch_windows(WINDOWS, 4))
    assert torch.allclose(logits(model), before, atol=1e-5, rtol=0)
    layer = model.model.layers[1]
    assert not torch.allclose(layer.self_attn.q_proj.weight, build(arch).model.layers[1].self_attn.q_proj.weight)


def test_slicing_shrinks_every_matrix_and_the_model_still_runs():
    model = build("llama")
    parameters = sum(p.numel() for p in model.parameters())
    rotate_and_slice(model, plan([48, 40, 56, 32], 48), batch_windows(WINDOWS, 4))
    layers = model.model.layers
    assert model.model.embed_tokens.weight.shape == (128, 48)
    assert layers[1].self_attn.q_proj.weight.shape == (64, 40)
    assert layers[1].self_attn.o_proj.weight.shape == (40, 64)
    assert layers[1].mlp.gate_proj.weight.shape == (160, 40)
    assert layers[1].mlp.down_proj.weight.shape == (56, 160)
    assert layers[1].attn_shortcut.weight.shape == (40, 40)
    assert layers[1].mlp_shortcut.weight.shape == (56, 40)
    assert layers[3].mlp.down_proj.weight.shape == (48, 160)
    assert model.lm_head.weight.shape == (128, 48) and model.model.norm.weight.shape == (48,)
    assert sum(p.numel() for p in model.parameters()) < parameters
    generated = model.generate(PROMPT, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, PROMPT.shape[1] + 4)


def test_tied_embeddings_stay_tied_and_unsliced():
    """Untying would add a vocabulary-sized matrix: the embeddings and the head keep the original basis, the first
    layer reads and the last layer writes the full width."""
    model = build_tiny_model("qwen2", tie_word_embeddings=True)
    model.tie_weights()
    before = logits(model)
    rotate_and_slice(model, plan([64] * 4, 64, embeddings_rotated=False), batch_windows(WINDOWS, 4))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.allclose(logits(model), before, atol=1e-5, rtol=0)
    model = build_tiny_model("qwen2", tie_word_embeddings=True)
    model.tie_weights()
    embeddings = model.model.embed_tokens.weight.clone()
    rotate_and_slice(model, plan([48, 40, 56, 32], 64, embeddings_rotated=False), batch_windows(WINDOWS, 4))
    assert (
        torch.equal(model.model.embed_tokens.weight, embeddings)
        and model.lm_head.weight is model.model.embed_tokens.weight
    )
    layers = model.model.layers
    assert layers[0].self_attn.q_proj.weight.shape == (64, 64) and layers[0].attn_shortcut.weight.shape == (48, 64)
    assert layers[3].mlp.down_proj.weight.shape == (64, 160) and layers[3].mlp_shortcut.weight.shape == (64, 32)
    assert model.generate(PROMPT, max_new_tokens=2, do_sample=False).shape == (1, PROMPT.shape[1] + 2)


def test_gemma_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="Cannot slice a gemma3_text model: Gemma normalizes the attention"):
        check_sliceable(build_tiny_model("gemma3"))


def test_a_layer_with_an_extra_norm_is_refused():
    model = build_tiny_model("llama")
    model.model.layers[2].pre_feedforward_layernorm = torch.nn.LayerNorm(64)
    with pytest.raises(ValueError, match="decoder layer 2 has extra norms"):
        check_sliceable(model)
