"""Z-score distribution (ZD): share of a layer's weights far above the layer's mean (paper §3.1). Needs no data."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..model.layers import decoder_layers, linear_modules
from ..model.offload import materialized


def _share_above_one_sigma(weights: list[torch.Tensor]) -> float:
    count = sum(weight.numel() for weight in weights)
    total = sum(weight.double().sum() for weight in weights)
    mean = total / count
    variance = sum(((weight.double() - mean) ** 2).sum() for weight in weights) / count
    threshold = mean + variance.sqrt()
    return float(sum((weight.double() > threshold).sum() for weight in weights) / count)


def zd_scores(model: nn.Module, skip: Iterable[str] = ()) -> list[float]:
    """ZD score of every decoder layer: the share of the layer's Linear weights whose z-score exceeds 1, with mean
    and standard deviation taken over all of the layer's Linear weights together.

    The paper's method section reads "more such weights = more important"; that is this score. Its abstract reads
    the other way ("smaller is better"): that is `importance="reverse_zd"`.

    Args:
        model (`PreTrainedModel`):
            A causal LM in full precision.
        skip (`Iterable[str]`, *optional*):
            Linear modules to leave out (`modules_to_not_convert`).

    Returns:
        `list[float]`: one share in `[0, 1]` per decoder layer.
    """
    scores = []
    for index, layer in enumerate(decoder_layers(model)):
        with materialized(layer):  # one layer in memory at a time when accelerate offloaded them
            weights = [linear.weight.detach() for linear in linear_modules(layer, skip).values()]
            if not weights:
                raise ValueError(f"Decoder layer {index} has no Linear module to score with ZD.")
            scores.append(_share_above_one_sigma(weights))
    return scores
