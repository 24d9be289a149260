import math

import pytest
import torch

from conftest import build_tiny_model, build_tiny_tokenizer
from optimum_layerwise.evaluation.perplexity import adds_bos, evaluation_windows, perplexity, score_windows


TEXTS = [f"Document {i}: " + "the quick brown fox jumps over the lazy dog. " * (5 + i) for i in range(6)]


def test_windows_are_spread_over_the_whole_text():
    tokenizer = build_tiny_tokenizer()
    all_windows, _ = evaluation_windows(TEXTS, tokenizer, seq_len=32, prepend_bos=False)
    few, context = evaluation_windows(TEXTS, tokenizer, seq_len=32, num_windows=3, prepend_bos=False)
    assert context == 0 and len(few) == 3
    assert few[0] == all_windows[0] and few[-1] == all_windows[-1]  # first and last window of the stream
    assert all(len(window) == 32 for window in few)
    assert evaluation_windows(TEXTS, tokenizer, seq_len=32, num_windows=10_000)[0] == all_windows


def test_bos_is_prepended_when_the_tokenizer_adds_it():
    tokenizer = build_tiny_tokenizer()
    assert not adds_bos(tokenizer)  # a plain tokenizer without a post-processor adds no BOS
    windows, context = evaluation_windows(TEXTS, tokenizer, seq_len=16, num_windows=2, prepend_bos=True)
    assert context == 1 and all(window[0] == tokenizer.bos_token_id and len(window) == 17 for window in windows)


def test_matches_the_model_loss_and_is_deterministic():
    model, tokenizer = build_tiny_model("llama"), build_tiny_tokenizer()
    result = perplexity(model, TEXTS, tokenizer, seq_len=24, num_windows=4, batch_size=3, prepend_bos=False)
    windows, _ = evaluation_windows(TEXTS, tokenizer, seq_len=24, num_windows=4, prepend_bos=False)
    with torch.no_grad():
        losses = [model(torch.tensor([w]), labels=torch.tensor([w])).loss.item() for w in windows]
    assert result.num_tokens == 4 * 23 and result.num_windows == 4
    assert math.log(result.perplexity) == pytest.approx(sum(losses) / 4, rel=1e-5)
    again = perplexity(model, TEXTS, tokenizer, seq_len=24, num_windows=4, batch_size=1, prepend_bos=False)
    assert again.perplexity == pytest.approx(result.perplexity, rel=1e-6)


def test_bos_only_adds_context():
    model = build_tiny_model("gemma3")
    windows = [[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]]
    with_bos = score_windows(model, windows, context=1)
    without = score_windows(model, [w[1:] for w in windows], context=0)
    assert with_bos.num_tokens == without.num_tokens == 6
    assert with_bos.perplexity != without.perplexity


def test_too_short_text():
    with pytest.raises(ValueError, match="fewer than one window"):
        evaluation_windows(["short"], build_tiny_tokenizer(), seq_len=512)
