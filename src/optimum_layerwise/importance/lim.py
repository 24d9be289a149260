"""Layer Input Modification (LIM): how much a decoder layer changes its input (paper §3.1, Eq. 1)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers.utils import logging

from ..calibration import CalibrationBatch
from ..layers import decoder_layers


def _input_device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


def lim_scores(model: nn.Module, batches: Iterable[CalibrationBatch]) -> list[float]:
    """LIM score of every decoder layer: minus the cosine similarity between the layer's input and output hidden
    states, per token, averaged over all non-padding calibration tokens.

    All layers are scored in one forward pass per batch: forward hooks on the decoder layers read each layer's input
    (`hidden_states`) and output. The language-model head is not run.

    Args:
        model (`PreTrainedModel`):
            A causal LM in full precision.
        batches (`Iterable[CalibrationBatch]`):
            Padded calibration batches; padding is excluded from the average.

    Returns:
        `list[float]`: one score per decoder layer, in `[-1, 1]`, higher = more important.
    """
    layers = decoder_layers(model)
    sums = torch.zeros(len(layers), dtype=torch.float64)
    state: dict[str, torch.Tensor] = {}

    def hook_for(index: int):
        def hook(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            cosine = nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
            mask = state["mask"].to(cosine.device)
            sums[index] += (cosine.double() * mask).sum().cpu()

        return hook

    handles = [layer.register_forward_hook(hook_for(index), with_kwargs=True) for index, layer in enumerate(layers)]
    runner = model.base_model if hasattr(model, "base_model") else model
    device = _input_device(model)
    num_tokens = 0
    try:
        with torch.no_grad():
            for batch in logging.tqdm(batches, desc="Scoring layers (LIM)", unit="batch"):
                state["mask"] = batch.attention_mask.double()
                runner(
                    input_ids=batch.input_ids.to(device),
                    attention_mask=batch.attention_mask.to(device),
                    use_cache=False,
                )
                num_tokens += batch.num_tokens
    finally:
        for handle in handles:
            handle.remove()
    if num_tokens == 0:
        raise ValueError("LIM needs calibration tokens, but the calibration batches are empty.")
    return (-(sums / num_tokens)).tolist()
