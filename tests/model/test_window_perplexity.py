"""Perplexity of token windows (`model/perplexity.py`), the measure of the held-out check."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import build_tiny_model
from optimum_layerwise.model import perplexity
from optimum_layerwise.model.perplexity import score_windows


@pytest.mark.parametrize(("batch_size", "context", "chunk"), [(1, 0, 128), (3, 1, 128), (2, 0, 7)])
def test_chunked_loss_equals_cross_entropy_over_all_logits(batch_size, context, chunk, monkeypatch):
    monkeypatch.setattr(perplexity, "NLL_CHUNK", chunk)
    model = build_tiny_model().eval()
    windows = torch.randint(0, 128, (5, 40), generator=torch.Generator().manual_seed(0)).tolist()
    result = score_windows(model, windows, context, batch_size=batch_size)
    with torch.no_grad():
        ids = torch.tensor(windows)
        logits = model(input_ids=ids).logits[:, context:-1]
        expected = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), ids[:, context + 1 :].flatten(), reduction="sum"
        )
    assert result.num_tokens == 5 * (40 - context - 1) and result.num_windows == 5
    assert result.nll == pytest.approx(expected.item(), rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected.item() / result.num_tokens), rel=1e-5)
