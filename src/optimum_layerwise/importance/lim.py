"""Layer Input Modification (LIM): how much a decoder layer changes its input (paper §3.1, Eq. 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data.calibration import CalibrationBatch
from ..model.layers import decoder_layers
from ..model.walk import LayerCall, run_layer, walk_layers
from ..slicing.layers import residual_path


def lim_scores(model: nn.Module, batches: Sequence[CalibrationBatch]) -> list[float]:
    """LIM score of every decoder layer: minus the cosine similarity between the layer's input and output hidden
    states, per token, averaged over all non-padding calibration tokens.

    All layers are scored in one pass over the calibration batches, one layer at a time
    ([`~optimum_layerwise.walk.walk_layers`]: a layer offloaded by accelerate is read once). The language-model head
    is not run.

    Args:
        model (`PreTrainedModel`):
            A causal LM in full precision.
        batches (`Sequence[CalibrationBatch]`):
            Padded calibration batches; padding is excluded from the average.

    Returns:
        `list[float]`: one score per decoder layer, in `[-1, 1]`, higher = more important.
    """
    num_tokens = sum(batch.num_tokens for batch in batches)
    if num_tokens == 0:
        raise ValueError("LIM needs calibration tokens, but the calibration batches are empty.")
    masks = [batch.attention_mask.double() for batch in batches]
    sums = torch.zeros(len(decoder_layers(model)), dtype=torch.float64)

    def step(index: int, layer: nn.Module, inputs: list[torch.Tensor], calls: list[LayerCall]) -> list[torch.Tensor]:
        outputs = run_layer(layer, inputs, calls)
        for hidden_in, hidden_out, mask in zip(inputs, outputs, masks):
            hidden_in = residual_path(layer, hidden_in)  # a sliced layer writes another basis and width
            cosine = nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
            sums[index] += (cosine.double() * mask.to(cosine.device)).sum().cpu()
        return outputs

    walk_layers(model, batches, step, "Scoring layers (LIM)")
    return (-(sums / num_tokens)).tolist()
