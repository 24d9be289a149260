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
from ..utils.system_memory import return_freed_memory
from .layers import decoder_layers
from .offload import return_memory_after_each_layer


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
    model: nn.Module, windows: list[list[int]], context: int, *, batch_size: int = 1, desc: str = "Perplexity"
) -> PerplexityResult:
    """Perplexity of `model` on windows of equal length; the first `context + 1` tokens of each window are not
    scored (`context` = 1 when a BOS token was put in front). Shows a progress bar titled `desc`.

    Beyond the model's own logits (`batch_size · seq_len · vocab` values), the loss takes [`NLL_CHUNK`] positions of
    them at a time in float32, not a float32 copy and a log-softmax of them all."""
    device = model.get_input_embeddings().weight.device
    nll, num_tokens = 0.0, 0
    starts = range(0, len(windows), batch_size)
    # a quantized forward frees a dequantized weight per Linear: given back after each layer, not kept resident
    hooks = return_memory_after_each_layer(decoder_layers(model))
    try:
        with torch.no_grad():
            for start in logging.tqdm(starts, desc=desc, unit="batch"):
                input_ids = torch.tensor(windows[start : start + batch_size], device=device)
                logits = model(input_ids=input_ids, use_cache=False).logits
                for row, ids in zip(logits, input_ids):
                    nll += _summed_nll(row[context:-1], ids[context + 1 :])
                    num_tokens += len(ids) - context - 1
                del logits
                return_freed_memory()
    finally:
        for hook in hooks:
            hook.remove()
    return PerplexityResult(math.exp(nll / num_tokens), nll, num_tokens, len(windows))


NLL_CHUNK = 128


def _summed_nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Summed negative log-likelihood of `targets` under `logits` (positions × vocabulary), [`NLL_CHUNK`] positions
    at a time."""
    total = 0.0
    for chunk, chunk_targets in zip(logits.split(NLL_CHUNK), targets.split(NLL_CHUNK)):
        chunk = chunk.float()
        total += (torch.logsumexp(chunk, dim=-1) - chunk.gather(-1, chunk_targets[:, None])[:, 0]).sum().item()
    return total


def prepare_windows(windows: list[list[int]], tokenizer: Any) -> tuple[list[list[int]], int]:
    """Put the BOS token in front of every window that lacks it when the tokenizer adds one itself (Gemma needs it);
    returns the windows and how many leading tokens are context only."""
    if tokenizer is not None and adds_bos(tokenizer):
        bos = tokenizer.bos_token_id
        return [window if window[:1] == [bos] else [bos, *window] for window in windows], 1
    return windows, 0
