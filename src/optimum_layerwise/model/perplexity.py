"""How good a quantized model is: perplexity of fixed token windows, and the held-out check that ends every
quantization (the same windows scored by the model before and after it is quantized).

The windows of the check come from the calibration data but were not used to calibrate (see
[`~optimum_layerwise.calibration.split_windows`]). A perplexity ratio above [`COLLAPSE_RATIO`] means the model is
collapsed; above [`DEGRADED_RATIO`], noticeably degraded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from ..data.calibration import adds_bos
from ..data.corpora import recorded_dataset_name


COLLAPSE_RATIO = 2.0
DEGRADED_RATIO = 1.3


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


@dataclass(frozen=True)
class QualityCheck:
    """Perplexity of the same held-out windows before and after quantization.

    Args:
        dataset (`str`, *optional*): Name of the calibration data the windows come from (`None`: in-memory data).
        num_windows (`int`), seq_len (`int`): The windows scored.
        unquantized (`float`): Perplexity of the full-precision model.
        quantized (`float`): Perplexity of the quantized model.
    """

    dataset: str | None
    num_windows: int
    seq_len: int
    unquantized: float
    quantized: float

    @property
    def ratio(self) -> float:
        """Quantized over unquantized perplexity (1.0 = no loss)."""
        return self.quantized / self.unquantized

    @property
    def verdict(self) -> str:
        """`"collapsed"` above [`COLLAPSE_RATIO`], `"degraded"` above [`DEGRADED_RATIO`], else `"good"`."""
        if not math.isfinite(self.ratio) or self.ratio > COLLAPSE_RATIO:
            return "collapsed"
        return "degraded" if self.ratio > DEGRADED_RATIO else "good"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 4), "verdict": self.verdict}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityCheck:
        """Read back [`to_dict`]'s output (as saved in `config.json`).

        Raises:
            `ValueError`: when a field is missing or has the wrong type.
        """
        try:
            check = cls(
                dataset=data["dataset"],
                num_windows=int(data["num_windows"]),
                seq_len=int(data["seq_len"]),
                unquantized=float(data["unquantized"]),
                quantized=float(data["quantized"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"`quality` must be a held-out quality check as saved by optimum-layerwise, got {data!r:.80}."
            ) from None
        if check.dataset is not None and not isinstance(check.dataset, str):
            raise ValueError(f"`quality['dataset']` must be a name or None, got {check.dataset!r:.40}.")
        return check

    def eval_results(self) -> dict[str, float]:
        """The check as model-card evaluation results."""
        where = f"{self.dataset or 'calibration data'}, {self.num_windows}x{self.seq_len} held-out tokens"
        return {
            f"perplexity ({where})": round(self.quantized, 4),
            f"perplexity unquantized ({where})": round(self.unquantized, 4),
            "perplexity ratio (quantized / unquantized)": round(self.ratio, 4),
        }

    def summary(
        self,
        original: str = "unquantized",
        fix: str = "use higher bits (e.g. bits=(8, 4)), a larger budget, or backend='gptq'",
        remedy: str = "Consider a larger budget or backend='gptq'",
    ) -> str:
        """One line for the terminal; `original` names the model before compression, `fix` and `remedy` what to do
        when it collapsed or degraded."""
        line = (
            f"held-out perplexity {self.quantized:.2f} vs {self.unquantized:.2f} {original} (ratio {self.ratio:.3f}, "
            f"{self.num_windows}x{self.seq_len} tokens of {self.dataset or 'the calibration data'} not used to "
            "calibrate)"
        )
        if self.verdict == "collapsed":
            return f"COLLAPSED: {line}. This model is not usable: {fix}."
        if self.verdict == "degraded":
            return f"degraded: {line}. {remedy}."
        return line


def check_held_out(
    model: nn.Module,
    windows: list[list[int]],
    context: int,
    reference: float,
    dataset: Any,
    seq_len: int,
    desc: str,
) -> QualityCheck:
    """Score the compressed `model` on the held-out `windows` (as [`score_windows`]) against the `reference`
    perplexity the model had before; `dataset` is the calibration data they come from."""
    compressed = score_windows(model, windows, context, desc=desc)
    return QualityCheck(recorded_dataset_name(dataset), len(windows), seq_len, reference, compressed.perplexity)


def prepare_windows(windows: list[list[int]], tokenizer: Any) -> tuple[list[list[int]], int]:
    """Put the BOS token in front of every window that lacks it when the tokenizer adds one itself (Gemma needs it);
    returns the windows and how many leading tokens are context only."""
    if tokenizer is not None and adds_bos(tokenizer):
        bos = tokenizer.bos_token_id
        return [window if window[:1] == [bos] else [bos, *window] for window in windows], 1
    return windows, 0
