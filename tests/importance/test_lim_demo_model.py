"""LIM on the real demo model (SmolLM2-135M, 30 layers) against a direct hook-based computation."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_layerwise import compute_importance
from optimum_layerwise.data.calibration import token_windows
from optimum_layerwise.data.demo_models import DEMO_MODEL, resolve_model


@pytest.mark.slow
def test_lim_on_the_demo_model_matches_a_direct_computation():
    path = resolve_model(DEMO_MODEL)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    windows = token_windows("shakespeare", tokenizer, num_samples=6, seq_len=96, seed=0)
    windows[1] = windows[1][:40]  # one short window: padded inside compute_importance's batches

    scores = compute_importance(model, "lim", windows, num_samples=6, seq_len=96, batch_size=3)

    # direct: one window at a time (no padding), a plain forward hook per layer, cosine per token
    sums, count = torch.zeros(30, dtype=torch.float64), 0
    handles = [
        layer.register_forward_hook(
            lambda module, args, kwargs, output, i=i: sums.__setitem__(
                i,
                sums[i]
                + torch.nn.functional.cosine_similarity(
                    kwargs.get("hidden_states", args[0] if args else None), output, dim=-1
                ).sum(),
            ),
            with_kwargs=True,
        )
        for i, layer in enumerate(model.model.layers)
    ]
    with torch.no_grad():
        for window in windows:
            model(torch.tensor([window]))
            count += len(window)
    for handle in handles:
        handle.remove()
    direct = (-(sums / count)).tolist()

    assert len(scores) == 30
    assert scores == pytest.approx(direct, abs=2e-5)
    most_important = sorted(range(30), key=lambda i: -scores[i])[:3]
    assert 0 in most_important  # the first layer changes its input most, as the paper reports for larger models
