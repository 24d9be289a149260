"""Perplexity of fixed token windows, the measure behind the held-out check that ends every quantization (see
[`~optimum_layerwise.pipelines.quality_check.check_held_out`])."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from ..data.calibration import adds_bos


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


def score_windows(
    model: nn.Module, windows: list[list[int]], context: int, *, batch_size: int = 2, desc: str = "Perplexity"
) -> PerplexityResult:
    """Perplexity of `model` on windows of equal length; the first `context + 1` tokens of each window are not
    scored (`context` = 1 when a BOS token was put in front). Shows a progress bar titled `desc`."""
    device = model.get_input_embeddings().weight.device
    nll, num_tokens = 0.0, 0
    starts = range(0, len(windows), batch_size)
    with torch.no_grad():
        for start in logging.tqdm(starts, desc=desc, unit="batch"):
            input_ids = torch.tensor(windows[start : start + batch_size], device=device)
            logits = model(input_ids=input_ids, use_cache=False).logits[:, context:-1].float()
            targets = input_ids[:, context + 1 :]
            nll += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            num_tokens += targets.numel()
    return PerplexityResult(math.exp(nll / num_tokens), nll, num_tokens, len(windows))


def prepare_windows(windows: list[list[int]], tokenizer: Any) -> tuple[list[list[int]], int]:
    """Put the BOS token in front of every window that lacks it when the tokenizer adds one itself (Gemma needs it);
    returns the windows and how many leading tokens are context only."""
    if tokenizer is not None and adds_bos(tokenizer):
        bos = tokenizer.bos_token_id
        return [window if window[:1] == [bos] else [bos, *window] for window in windows], 1
    return windows, 0
