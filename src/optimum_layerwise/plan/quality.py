"""The held-out quality record: perplexity of the same held-out windows before and after compression, and its verdict.

The windows of the check come from the calibration data but were not used to calibrate (see
[`~optimum_layerwise.data.calibration.split_windows`]). A perplexity ratio above [`COLLAPSE_RATIO`] means the model is
collapsed; above [`DEGRADED_RATIO`], noticeably degraded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


COLLAPSE_RATIO = 2.0
DEGRADED_RATIO = 1.3
# how the held-out check's line speaks of slicing (see QualityCheck.summary)
SLICING_WORDING = ("unsliced", "slice less (a lower `sparsity`)", "Consider a lower `sparsity`")


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
