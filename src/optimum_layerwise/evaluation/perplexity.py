"""Perplexity on held-out text: fixed windows spread evenly over a corpus, batched, deterministic."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.utils import logging

from ..data.calibration import adds_bos, token_sequences
from ..model.perplexity import PerplexityResult, score_windows


__all__ = ["PerplexityResult", "adds_bos", "evaluation_windows", "perplexity", "score_windows"]


def evaluation_windows(
    dataset: Any, tokenizer: Any, *, seq_len: int, num_windows: int | None = None, prepend_bos: bool | None = None
) -> tuple[list[list[int]], int]:
    """Cut a corpus into non-overlapping windows of `seq_len` scored tokens, evenly spread over the whole text.

    Documents are tokenized without special tokens and joined with EOS (when the tokenizer has one) into one stream.

    Args:
        dataset (`str`, `list[str]` or token ids):
            Corpus name, text file or folder, texts, or token ids (see [`~optimum_layerwise.corpora.load_corpus`]).
        tokenizer:
            The model's tokenizer.
        seq_len (`int`):
            Scored tokens per window.
        num_windows (`int`, *optional*):
            How many windows; evenly spaced over the stream. All windows when `None`.
        prepend_bos (`bool`, *optional*):
            Put the BOS token in front of every window (not scored). Defaults to whether the tokenizer adds BOS
            itself, which Gemma needs.

    Returns:
        `tuple[list[list[int]], int]`: the windows, and how many leading tokens of each are context only (0 or 1).
    """
    if prepend_bos is None:
        prepend_bos = adds_bos(tokenizer)
    plain = _PlainTokenizer(tokenizer)
    eos = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
    stream: list[int] = []
    for sequence in token_sequences(dataset, plain):
        stream.extend(sequence + eos)
    available = len(stream) // seq_len
    if available == 0:
        raise ValueError(f"The evaluation text has {len(stream)} tokens, fewer than one window of seq_len={seq_len}.")
    count = available if num_windows is None else min(num_windows, available)
    if num_windows is not None and num_windows > available:
        logging.get_logger(__name__).warning(f"Only {available} windows of {seq_len} tokens available; using all.")
    starts = [round(i * (available - 1) / max(count - 1, 1)) * seq_len for i in range(count)] if count > 1 else [0]
    prefix = [tokenizer.bos_token_id] if prepend_bos else []
    return [prefix + stream[start : start + seq_len] for start in starts], len(prefix)


class _PlainTokenizer:
    """Calls a tokenizer without special tokens (documents are joined into one stream)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> dict[str, list[int]]:
        return self.tokenizer(text, add_special_tokens=False)


def perplexity(
    model: nn.Module,
    dataset: Any,
    tokenizer: Any,
    *,
    seq_len: int = 512,
    num_windows: int | None = 16,
    batch_size: int = 2,
    prepend_bos: bool | None = None,
) -> PerplexityResult:
    """Perplexity of `model` on `dataset`, over non-overlapping windows spread evenly across the text.

    Every window is scored on its own (no context carried over); the first token of a window is only context. Under
    `torch.no_grad()`, with a progress bar; the same inputs always give the same windows.

    Args:
        model (`PreTrainedModel`):
            A causal LM (quantized or not).
        dataset:
            Corpus name (e.g. `"kjv"`, `"wikipedia"`), text file or folder, texts or token ids.
        tokenizer:
            The model's tokenizer.
        seq_len (`int`, *optional*, defaults to 512):
            Tokens per window.
        num_windows (`int`, *optional*, defaults to 16):
            Number of windows (`None` = the whole text).
        batch_size (`int`, *optional*, defaults to 2):
            Windows per forward pass (logits take `batch_size · seq_len · vocab` floats).
        prepend_bos (`bool`, *optional*):
            BOS in front of every window; defaults to whether the tokenizer adds BOS (Gemma).

    Returns:
        [`PerplexityResult`].
    """
    windows, context = evaluation_windows(
        dataset, tokenizer, seq_len=seq_len, num_windows=num_windows, prepend_bos=prepend_bos
    )
    return score_windows(model, windows, context, batch_size=batch_size)
