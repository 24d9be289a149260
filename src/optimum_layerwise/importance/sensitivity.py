"""Measured sensitivity: what quantizing each decoder layer alone actually costs, at every level below the top.

Two measures:

- `"output"` (cheap): the relative error `‖L_q(x) − L(x)‖ / ‖L(x)‖` of the layer's output when only that layer is
  quantized, on the layer's real calibration inputs `x`. Measured inside ONE forward pass of the full-precision model
  per batch: a forward hook re-runs the layer with its quantized Linear modules on the same input. Cost: one forward
  pass plus one pass through each layer per lower level (≈ 2 forward passes for a two-level plan). The re-run uses
  float copies of the dequantized weights: the same numbers as the packed modules, at float speed.
- `"kl"` (exact): the KL divergence `KL(p_top ‖ p_i)` of the next-token distribution between the model with every
  layer at the top level and the same model with only layer `i` at the lower level, averaged over calibration tokens.
  Cost: one forward pass per layer and lower level, plus one for the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from transformers.utils import logging

from ..calibration import CalibrationBatch
from ..swapping import LayerVersions


SENSITIVITY_MEASURES = ("output", "kl")


def _masked_sum_of_squares(hidden: torch.Tensor, mask: torch.Tensor) -> float:
    """Sum of squares of `hidden` (batch, tokens, hidden) over the tokens where `mask` is 1: one fused float32 norm per
    token, accumulated over tokens in float64 (no float64 copy of the hidden states)."""
    per_token = torch.linalg.vector_norm(hidden, dim=-1, dtype=torch.float32).double()
    return float((per_token.pow(2) * mask).sum())


def _output_error(
    model: nn.Module, versions: LayerVersions, lower: Sequence[int], batches: Iterable[CalibrationBatch]
) -> dict[int, dict[int, float]]:
    num_layers = len(versions.layers)
    squared_error = torch.zeros(num_layers, len(lower), dtype=torch.float64)
    squared_norm = torch.zeros(num_layers, dtype=torch.float64)
    state = {"busy": False, "mask": None}

    def hook_for(index: int):
        def hook(module, args, kwargs, output):
            if state["busy"]:
                return
            state["busy"] = True
            try:
                reference = output[0] if isinstance(output, tuple) else output
                mask = state["mask"].to(reference.device)
                squared_norm[index] += _masked_sum_of_squares(reference, mask)
                for column, bits in enumerate(lower):
                    versions.put(index, bits)
                    quantized = module(*args, **kwargs)
                    quantized = quantized[0] if isinstance(quantized, tuple) else quantized
                    squared_error[index, column] += _masked_sum_of_squares(quantized - reference, mask)
                versions.put(index, None)
            finally:
                state["busy"] = False

        return hook

    handles = [layer.register_forward_hook(hook_for(i), with_kwargs=True) for i, layer in enumerate(versions.layers)]
    device = model.get_input_embeddings().weight.device
    runner = model.base_model if hasattr(model, "base_model") else model
    try:
        with torch.no_grad():
            for batch in logging.tqdm(batches, desc="Measuring layer sensitivity (output)", unit="batch"):
                state["mask"] = batch.attention_mask.double()
                runner(
                    input_ids=batch.input_ids.to(device),
                    attention_mask=batch.attention_mask.to(device),
                    use_cache=False,
                )
    finally:
        for handle in handles:
            handle.remove()
    relative = (squared_error / squared_norm[:, None]).sqrt()
    return {i: {bits: float(relative[i, c]) for c, bits in enumerate(lower)} for i in range(num_layers)}


def _kl(
    model: nn.Module, versions: LayerVersions, top: int, lower: Sequence[int], batches: list[CalibrationBatch]
) -> dict[int, dict[int, float]]:
    device = model.get_input_embeddings().weight.device
    num_layers = len(versions.layers)
    for index in range(num_layers):
        versions.put(index, top)

    def log_probs(batch: CalibrationBatch) -> torch.Tensor:
        logits = model(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False
        ).logits
        return torch.log_softmax(logits.float(), dim=-1)

    costs: dict[int, dict[int, float]] = {i: {} for i in range(num_layers)}
    num_tokens = sum(batch.num_tokens for batch in batches)
    progress = logging.tqdm(total=num_layers * len(lower) + 1, desc="Measuring layer sensitivity (KL)", unit="pass")
    try:
        with torch.no_grad():
            references = [log_probs(batch) for batch in batches]
            progress.update()
            for index in range(num_layers):
                for bits in lower:
                    versions.put(index, bits)
                    total = 0.0
                    for batch, reference in zip(batches, references):
                        kl = (reference.exp() * (reference - log_probs(batch))).sum(-1)
                        total += (kl * batch.attention_mask.to(kl.device)).sum().item()
                    costs[index][bits] = total / num_tokens
                    progress.update()
                versions.put(index, top)
    finally:
        progress.close()
        for index in range(num_layers):
            versions.put(index, None)
    return costs


def measure_layer_costs(
    model: nn.Module,
    batches: Sequence[CalibrationBatch],
    bits: Sequence[int],
    *,
    measure: str = "output",
    backend: str = "quanto",
    group_size: int | None = 128,
    skip: Sequence[str] = (),
) -> dict[int, dict[int, float]]:
    """Cost of quantizing each decoder layer alone at each level below the top one (the top level costs 0).

    Args:
        model (`PreTrainedModel`):
            The full-precision model (its Linear modules are swapped during the measurement and restored after).
        batches (`Sequence[CalibrationBatch]`):
            Calibration batches.
        bits (`Sequence[int]`):
            The levels, high to low.
        measure (`str`, *optional*, defaults to `"output"`):
            `"output"` (relative layer-output error, ≈ 2 forward passes) or `"kl"` (end-to-end KL divergence, one
            forward pass per layer and lower level).
        backend (`str`, *optional*, defaults to `"quanto"`), group_size (`int`, *optional*, defaults to 128):
            How layers are quantized for the measurement (use the same as for the real quantization).
        skip (`Sequence[str]`, *optional*):
            Linear modules that stay in full precision.

    Returns:
        `dict[int, dict[int, float]]`: `{layer: {bits: cost}}`, including `{top: 0.0}`.
    """
    if measure not in SENSITIVITY_MEASURES:
        raise ValueError(f"`measure` must be one of {SENSITIVITY_MEASURES}, got {measure!r}.")
    top, lower = bits[0], list(bits[1:])
    versions = LayerVersions(model, backend, group_size, skip, simulate=True)
    if measure == "output":
        costs = _output_error(model, versions, lower, batches)
    else:
        costs = _kl(model, versions, top, lower, list(batches))
    return {index: {top: 0.0, **layer_costs} for index, layer_costs in costs.items()}


def costs_to_scores(costs: dict[int, dict[int, float]]) -> list[float]:
    """One importance score per layer from measured costs: the cost of the lowest level (higher = more important)."""
    return [max(costs[index].values()) for index in sorted(costs)]
