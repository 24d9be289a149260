import pytest
import torch

from conftest import build_tiny_model
from optimum_layerwise import compute_importance
from optimum_layerwise.data.calibration import batch_windows


def make_identity(layer):
    """Zero the residual branches so that the layer returns its input unchanged."""
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


def reference_lim(model, input_ids):
    """LIM from `output_hidden_states`: entry i is the input of layer i, entry i+1 its output (except the last
    layer, whose output is only returned after the final norm)."""
    with torch.no_grad():
        hidden = model(input_ids, output_hidden_states=True).hidden_states
    return [
        -torch.nn.functional.cosine_similarity(hidden[i], hidden[i + 1], dim=-1).mean().item()
        for i in range(len(hidden) - 2)
    ]


def test_lim_matches_a_direct_computation(arch, token_batches):
    model = build_tiny_model(arch)
    scores = compute_importance(model, "lim", token_batches, num_samples=6, seq_len=48)
    assert len(scores) == model.config.num_hidden_layers
    assert scores[:-1] == pytest.approx(reference_lim(model, token_batches), abs=1e-5)


def test_identity_layer_is_least_important(arch, token_batches):
    model = build_tiny_model(arch)
    make_identity(model.model.layers[2])
    scores = compute_importance(model, "lim", token_batches)
    assert scores[2] == pytest.approx(-1.0, abs=1e-6)
    assert min(range(len(scores)), key=scores.__getitem__) == 2
    reverse = compute_importance(model, "reverse_lim", token_batches)
    assert reverse == pytest.approx([-s for s in scores])


def test_padding_is_ignored(token_batches):
    model = build_tiny_model("llama")
    long, short = token_batches[0].tolist(), token_batches[1, :20].tolist()
    together = batch_windows([long, short], batch_size=2)
    assert together[0].attention_mask.sum() == 68  # the short row is padded
    from optimum_layerwise.importance.lim import lim_scores

    padded = lim_scores(model, together)
    separate = lim_scores(model, batch_windows([long, short], batch_size=1))
    assert padded == pytest.approx(separate, abs=1e-5)


def test_one_pass_per_batch_without_gradients_or_lm_head(token_batches):
    model = build_tiny_model("llama")
    calls = {"embeddings": 0, "norm": 0, "lm_head": 0, "grad": []}
    model.model.embed_tokens.register_forward_hook(lambda *_: calls.__setitem__("embeddings", calls["embeddings"] + 1))
    model.model.norm.register_forward_hook(lambda *_: calls.__setitem__("norm", calls["norm"] + 1))
    model.lm_head.register_forward_hook(lambda *_: calls.__setitem__("lm_head", calls["lm_head"] + 1))
    model.model.layers[0].register_forward_hook(lambda *_: calls["grad"].append(torch.is_grad_enabled()))
    compute_importance(model, "lim", token_batches, num_samples=6, seq_len=48, batch_size=2)
    assert calls["embeddings"] == 3  # one pass of the embeddings per batch records the first layer's inputs
    assert calls["norm"] == calls["lm_head"] == 0  # the recording pass stops at the last layer
    assert calls["grad"] == [False] * 6  # each layer is called once per batch to record, once to run
