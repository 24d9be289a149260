"""Perplexity on held-out text: fixed windows spread evenly over a corpus, batched, deterministic."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from ..calibration import token_sequences


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity and what it was measured on.

    Args:
        perplexity (`float`): `exp(nll / num_tokens)`.
        nll (`float`): Summed negative log-likelihood (nats) of the scored tokens.
        num_tokens (`int`): Number of scored tokens.
        num_windows (`int`): Number of windows.
    """

    perplexity: float
    nll: float
    num_tokens: int
    num_windows: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def adds_bos(tokenizer: Any) -> bool:
    """Whether `tokenizer` starts an encoded text with its BOS token (Gemma's does; SmolLM2's and Qwen2's do not)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos is not None and len(ids) > 0 and ids[0] == bos


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


def score_windows(
    model: nn.Module, windows: list[list[int]], context: int, *, batch_size: int = 2
) -> PerplexityResult:
    """Perplexity of `model` on prepared windows (see [`evaluation_windows`]); the first `context + 1` tokens of each
    window are not scored."""
    device = model.get_input_embeddings().weight.device
    nll, num_tokens = 0.0, 0
    with torch.no_grad():
        for start in logging.tqdm(range(0, len(windows), batch_size), desc="Perplexity", unit="batch"):
            input_ids = torch.tensor(windows[start : start + batch_size], device=device)
            logits = model(input_ids=input_ids, use_cache=False).logits[:, context:-1].float()
            targets = input_ids[:, context + 1 :]
            nll += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            num_tokens += targets.numel()
    return PerplexityResult(math.exp(nll / num_tokens), nll, num_tokens, len(windows))
