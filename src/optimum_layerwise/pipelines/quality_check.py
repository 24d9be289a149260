"""The held-out check that ends every quantization and slicing: the same windows scored before and after."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..data.corpora import recorded_dataset_name
from ..model.perplexity import score_windows
from ..plan.quality import QualityCheck


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
