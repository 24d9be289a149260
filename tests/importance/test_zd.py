import pytest
import torch

from conftest import build_tiny_model
from optimum_layerwise import compute_importance


def reference_zd(layer):
    weights = torch.cat([module.weight.flatten() for module in layer.modules() if isinstance(module, torch.nn.Linear)])
    z = (weights - weights.mean()) / weights.std(unbiased=False)
    return (z > 1).double().mean().item()


def test_zd_is_the_share_of_weights_with_z_above_one(arch):
    model = build_tiny_model(arch)
    scores = compute_importance(model, "zd")
    assert scores == pytest.approx([reference_zd(layer) for layer in model.model.layers], abs=1e-6)


def test_zd_counts_heavy_tails_and_needs_no_data():
    model = build_tiny_model("llama")
    with torch.no_grad():
        for module in model.model.layers[1].modules():
            if isinstance(module, torch.nn.Linear):
                alternating = torch.ones(module.weight.numel())
                alternating[::2] = -1  # mean exactly 0, std exactly 1: every z-score is exactly ±1
                module.weight.copy_(alternating.view_as(module.weight))
    scores = compute_importance(model, "zd")
    assert scores[1] == 0.0  # no weight is strictly above one standard deviation
    assert all(0.1 < score < 0.2 for i, score in enumerate(scores) if i != 1)  # ~16% for near-Gaussian weights
    assert compute_importance(model, "reverse_zd") == pytest.approx([-s for s in scores])


def test_zd_leaves_out_skipped_modules():
    model = build_tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.gate_proj.weight.mul_(100)
    assert compute_importance(model, "zd", skip=["gate_proj"])[0] != compute_importance(model, "zd")[0]
