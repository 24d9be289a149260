"""Calibration data: texts or token ids in, fixed-length token windows out.

Knows no model. A tokenizer is used only through its call interface (`tokenizer(text)["input_ids"]`) and its
`pad_token_id`, so any Hugging Face tokenizer works.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import logging

from .corpora import load_corpus


logger = logging.get_logger(__name__)


@dataclass
class CalibrationBatch:
    """A padded batch of token windows.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch, length)`):
            Token ids, right-padded.
        attention_mask (`torch.LongTensor` of shape `(batch, length)`):
            1 for real tokens, 0 for padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """Number of non-padding tokens."""
        return int(self.attention_mask.sum())


def _texts_from(dataset: Any) -> list[str] | None:
    if isinstance(dataset, str):
        return load_corpus(dataset)
    if isinstance(dataset, Sequence) and dataset and all(isinstance(item, str) for item in dataset):
        return list(dataset)
    return None


def token_sequences(dataset: Any, tokenizer: Any) -> list[list[int]]:
    """Token ids of every document of `dataset` (texts are tokenized with `tokenizer`; see [`token_windows`])."""
    texts = _texts_from(dataset)
    if texts is not None:
        if tokenizer is None:
            raise ValueError("`dataset` holds text: pass `tokenizer` to turn it into token ids.")
        return [list(tokenizer(text)["input_ids"]) for text in texts if text.strip()]
    if isinstance(dataset, torch.Tensor):
        if dataset.dim() != 2 or dataset.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"`dataset` as a tensor must be 2-D integer token ids, got {tuple(dataset.shape)} {dataset.dtype}."
            )
        return dataset.tolist()
    if isinstance(dataset, Sequence) and dataset:
        sequences = []
        for item in dataset:
            ids = item.tolist() if isinstance(item, torch.Tensor) else item
            if not isinstance(ids, Sequence) or not ids or not all(isinstance(t, int) for t in ids):
                raise ValueError("`dataset` must be a list of strings or a list of non-empty token-id sequences.")
            sequences.append(list(ids))
        return sequences
    raise ValueError(
        f"`dataset` must be a list of strings, a list/tensor of token-id sequences or a text file path, got "
        f"{dataset!r}."
    )


def adds_bos(tokenizer: Any) -> bool:
    """Whether `tokenizer` starts an encoded text with its BOS token (Gemma's does; SmolLM2's and Qwen2's do not)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos is not None and len(ids) > 0 and ids[0] == bos


def split_windows(
    dataset: Any,
    tokenizer: Any = None,
    *,
    num_samples: int = 128,
    seq_len: int = 512,
    seed: int = 0,
    vocab_size: int | None = None,
    held_out: int = 0,
) -> tuple[list[list[int]], list[list[int]]]:
    """Cut calibration data into at most `num_samples` calibration windows of at most `seq_len` tokens, and up to
    `held_out` full-length windows that are not among them (to check quality on text the quantization never saw).

    Every sequence is split into consecutive windows of `seq_len` tokens (its last, shorter window is kept); when
    `tokenizer` starts its texts with a BOS token, every window starts with it, as the model saw in training. When
    there are more windows than `num_samples`, a seeded random subset is taken, in document order; the held-out
    windows are spread evenly over the full-length windows left over (none when nothing is left over).

    Args:
        dataset (`list[str]`, `list[list[int]]`, `torch.Tensor` or `str`):
            Texts (need `tokenizer`), token-id sequences, or a corpus name / text file / folder (see
            [`~optimum_layerwise.corpora.load_corpus`]).
        tokenizer (*optional*):
            A Hugging Face tokenizer, required for text.
        num_samples (`int`, *optional*, defaults to 128):
            Maximum number of calibration windows.
        seq_len (`int`, *optional*, defaults to 512):
            Maximum tokens per window.
        seed (`int`, *optional*, defaults to 0):
            Seed of the subset choice.
        vocab_size (`int`, *optional*):
            Size of the model's vocabulary: every token id must lie in `[0, vocab_size)`.
        held_out (`int`, *optional*, defaults to 0):
            How many held-out windows to return at most.

    Returns:
        `tuple[list[list[int]], list[list[int]]]`: the calibration windows and the held-out windows.

    Raises:
        `ValueError`: for empty data, or token ids outside the vocabulary. A warning is logged when all the data
        holds less than one window of `seq_len` tokens.
    """
    if num_samples < 1 or seq_len < 1:
        raise ValueError(f"`num_samples` and `seq_len` must be positive, got {num_samples} and {seq_len}.")
    prefix = [tokenizer.bos_token_id] if tokenizer is not None and adds_bos(tokenizer) else []
    step = max(1, seq_len - len(prefix))
    sequences = [
        sequence[len(prefix) :] if sequence[: len(prefix)] == prefix else sequence
        for sequence in token_sequences(dataset, tokenizer)
    ]
    windows = [
        prefix + sequence[start : start + step] for sequence in sequences for start in range(0, len(sequence), step)
    ]
    if not windows:
        raise ValueError("`dataset` produced no tokens: the calibration texts are empty.")
    if vocab_size is not None:
        low, high = min(min(window) for window in windows), max(max(window) for window in windows)
        if low < 0 or high >= vocab_size:
            wrong = low if low < 0 else high
            raise ValueError(f"`dataset` holds token id {wrong}, outside the model's vocabulary [0, {vocab_size}).")
    total = sum(len(window) for window in windows)
    if total < seq_len:
        logger.warning(
            f"The calibration data holds only {total} tokens, less than one window of seq_len={seq_len}: scores and "
            "calibration from so little text are noisy. Use a corpus such as 'shakespeare' or a longer text."
        )
    chosen = range(len(windows))
    if len(windows) > num_samples:
        chosen = sorted(random.Random(seed).sample(range(len(windows)), num_samples))
    picked = set(chosen)
    spare = [index for index, window in enumerate(windows) if index not in picked and len(window) == seq_len]
    count = min(held_out, len(spare))
    held = [windows[spare[round(i * (len(spare) - 1) / max(count - 1, 1))]] for i in range(count)]
    return [windows[index] for index in chosen], held


def token_windows(
    dataset: Any,
    tokenizer: Any = None,
    *,
    num_samples: int = 128,
    seq_len: int = 512,
    seed: int = 0,
    vocab_size: int | None = None,
) -> list[list[int]]:
    """The calibration windows of [`split_windows`]: at most `num_samples` windows of at most `seq_len` tokens."""
    return split_windows(
        dataset, tokenizer, num_samples=num_samples, seq_len=seq_len, seed=seed, vocab_size=vocab_size
    )[0]


def batch_windows(windows: list[list[int]], batch_size: int, pad_token_id: int = 0) -> list[CalibrationBatch]:
    """Right-pad windows into batches with attention masks.

    Args:
        windows (`list[list[int]]`):
            Token windows, e.g. from [`token_windows`].
        batch_size (`int`):
            Windows per batch.
        pad_token_id (`int`, *optional*, defaults to 0):
            Id used for padding (masked out, so its value does not change results).

    Returns:
        `list[CalibrationBatch]`.
    """
    batches = []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        length = max(len(window) for window in chunk)
        input_ids = torch.full((len(chunk), length), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), length), dtype=torch.long)
        for row, window in enumerate(chunk):
            input_ids[row, : len(window)] = torch.tensor(window, dtype=torch.long)
            attention_mask[row, : len(window)] = 1
        batches.append(CalibrationBatch(input_ids=input_ids, attention_mask=attention_mask))
    return batches


CALIBRATION_BATCH_SIZE = 8  # windows per forward pass of the calibration passes


def calibration_batches(
    dataset: Any,
    tokenizer: Any = None,
    *,
    num_samples: int = 128,
    seq_len: int = 512,
    batch_size: int = CALIBRATION_BATCH_SIZE,
    seed: int = 0,
    vocab_size: int | None = None,
) -> list[CalibrationBatch]:
    """Texts or token ids to padded batches: [`token_windows`] then [`batch_windows`]."""
    windows = token_windows(
        dataset, tokenizer, num_samples=num_samples, seq_len=seq_len, seed=seed, vocab_size=vocab_size
    )
    pad_token_id = getattr(tokenizer, "pad_token_id", None)
    return batch_windows(windows, batch_size, pad_token_id if pad_token_id is not None else 0)
