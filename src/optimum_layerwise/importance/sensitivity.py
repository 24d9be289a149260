"""Measured sensitivity: what quantizing each decoder layer (or each block or Linear of a layer) alone actually costs,
at every level below the top.

Two measures:

- `"output"` (cheap): the relative squared error `‖L_q(x)ₜ − L(x)ₜ‖² / ‖L(x)ₜ‖²` of the layer's output at each token
  `t`, averaged over tokens, when only that layer (or block, or module) is quantized, on the layer's real calibration
  inputs `x`. Per token, because the next layers read each token's hidden state through a norm (RMSNorm): a few
  tokens with huge hidden states ("massive activations", from layer 12 on in SmolLM2) would otherwise dominate the
  norm of the whole output and make every later layer look 50× cheaper to quantize than it is. Squared errors of
  independent perturbations add up, which is what the allocation assumes when it sums costs. Measured in ONE pass
  over the layers ([`~optimum_layerwise.walk.walk_layers`]: each layer in memory once): each layer runs on its
  full-precision inputs, then again with its quantized Linear modules on the same inputs. Cost: one forward pass
  plus one pass through each layer per lower level and unit (≈ 2 forward passes for a two-level plan per layer; a
  Llama layer has 2 blocks and 7 modules). The re-run uses float copies of the dequantized weights: the same numbers
  as the packed modules, at float speed; a layer's versions are dropped once it is measured.
- `"kl"` (exact): the KL divergence `KL(p_top ‖ p_u)` of the next-token distribution between the model with every
  layer at the top level and the same model with only unit `u` at the lower level, averaged over calibration tokens.
  Cost: one forward pass per unit and lower level, plus one for the reference.

Both measure on at most [`SCORING_WINDOWS`] calibration windows ([`scoring_batches`]): GPT-Q calibrates on 128 by
default, but the ranking of costs is stable from a few windows on, and at module granularity the measure re-runs every
layer 7 times per level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.utils import logging

from ..data.calibration import CalibrationBatch
from ..model.layers import AllocationUnit, allocation_units
from ..model.walk import LayerCall, first_output, run_layer, walk_layers
from ..plan.fields import check_granularity
from ..quantize.sequential import calibrate_every_level, calibrated_versions
from ..quantize.swapping import LayerVersions


SENSITIVITY_MEASURES = ("output", "kl")
SCORING_WINDOWS = 8  # on SmolLM2-135M the ranking from 2 to 32 windows matches the one from 64 (Spearman >= 0.997)


def scoring_positions(batches: Sequence[CalibrationBatch], max_windows: int = SCORING_WINDOWS) -> list[int]:
    """Positions in `batches` of about `max_windows` windows, as whole batches spread evenly over them (all of them
    when they hold no more)."""
    sizes = [len(batch.input_ids) for batch in batches]
    if sum(sizes) <= max_windows:
        return list(range(len(batches)))
    count = max(1, round(max_windows * len(batches) / sum(sizes)))
    return [index * len(batches) // count for index in range(count)]


def scoring_batches(batches: Sequence[CalibrationBatch], max_windows: int = SCORING_WINDOWS) -> list[CalibrationBatch]:
    """The batches at [`scoring_positions`]."""
    return [batches[position] for position in scoring_positions(batches, max_windows)]


def _token_squared_norms(hidden: torch.Tensor) -> torch.Tensor:
    """Squared norm of every token's hidden state, `(batch, tokens)` in float64: one fused float32 norm per token (no
    float64 copy of the hidden states)."""
    return torch.linalg.vector_norm(hidden, dim=-1, dtype=torch.float32).double().pow(2)


def _output_error(
    model: nn.Module,
    versions: LayerVersions,
    units: Sequence[AllocationUnit],
    lower: Sequence[int],
    batches: Sequence[CalibrationBatch],
    calibrated: bool,
) -> dict[str, dict[int, float]]:
    """Relative output errors measured on the [`scoring_batches`] of `batches` in one walk over the layers; with
    `calibrated`, the walk covers all of `batches` and each layer's versions are first calibrated on all of them."""
    units_of_layer: dict[int, list[int]] = {}
    for position, unit in enumerate(units):
        units_of_layer.setdefault(unit.layer, []).append(position)
    relative_error = torch.zeros(len(units), len(lower), dtype=torch.float64)
    num_tokens = torch.zeros(len(versions.layers), dtype=torch.float64)
    measured = scoring_positions(batches)
    walked = list(batches) if calibrated else [batches[position] for position in measured]
    if not calibrated:
        measured = list(range(len(walked)))
    masks = [batch.attention_mask.double() for batch in walked]
    calibration_masks = [batch.attention_mask.bool() for batch in walked]

    def step(index: int, layer: nn.Module, inputs: list[torch.Tensor], calls: list[LayerCall]) -> list[torch.Tensor]:
        if calibrated:
            outputs, by_level = calibrate_every_level(
                layer, versions.originals[index], inputs, calls, calibration_masks, lower, versions.backend,
                versions.group_size,
            )  # fmt: skip
            versions.use_versions({(index, bits): packed for bits, packed in by_level.items()})
        else:
            outputs = run_layer(layer, inputs, calls)
        chosen = [(inputs[p], calls[p], outputs[p], masks[p]) for p in measured]
        norms = [_token_squared_norms(out).clamp_min(torch.finfo(torch.float32).tiny) for _, _, out, _ in chosen]
        num_tokens[index] += float(sum(mask.sum() for *_, mask in chosen))
        for position in units_of_layer.get(index, ()):
            members = units[position].members
            for column, bits in enumerate(lower):
                versions.put(index, bits, members)
                for (states, call, reference, mask), norm in zip(chosen, norms):
                    quantized = first_output(layer(states, **call.kwargs))
                    ratio = _token_squared_norms(quantized - reference) / norm
                    relative_error[position, column] += float((ratio * mask.to(ratio.device)).sum())
            versions.put(index, None, members)
        versions.release(index)
        return outputs

    walk_layers(model, walked, step, "Measuring sensitivity (output)")
    relative = relative_error / torch.stack([num_tokens[unit.layer] for unit in units])[:, None]
    return {unit.name: {bits: float(relative[p, c]) for c, bits in enumerate(lower)} for p, unit in enumerate(units)}


def _kl(
    model: nn.Module,
    versions: LayerVersions,
    units: Sequence[AllocationUnit],
    top: int,
    lower: Sequence[int],
    batches: list[CalibrationBatch],
) -> dict[str, dict[int, float]]:
    device = model.get_input_embeddings().weight.device
    num_layers = len(versions.layers)
    for index in range(num_layers):
        versions.put(index, top)

    def log_probs(batch: CalibrationBatch) -> torch.Tensor:
        logits = model(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False
        ).logits
        return torch.log_softmax(logits.float(), dim=-1)

    costs: dict[str, dict[int, float]] = {unit.name: {} for unit in units}
    num_tokens = sum(batch.num_tokens for batch in batches)
    progress = logging.tqdm(total=len(units) * len(lower) + 1, desc="Measuring sensitivity (KL)", unit="pass")
    try:
        with torch.no_grad():
            references = [log_probs(batch) for batch in batches]
            progress.update()
            for unit in units:
                for bits in lower:
                    versions.put(unit.layer, bits, unit.members)
                    total = 0.0
                    for batch, reference in zip(batches, references):
                        kl = (reference.exp() * (reference - log_probs(batch))).sum(-1)
                        total += (kl * batch.attention_mask.to(kl.device)).sum().item()
                    costs[unit.name][bits] = total / num_tokens
                    progress.update()
                versions.put(unit.layer, top, unit.members)
    finally:
        progress.close()
        for index in range(num_layers):
            versions.put(index, None)
    return costs


def measure_unit_costs(
    model: nn.Module,
    batches: Sequence[CalibrationBatch],
    bits: Sequence[int],
    *,
    granularity: str = "layer",
    measure: str = "output",
    backend: str = "quanto",
    group_size: int | None = 128,
    skip: Sequence[str] = (),
    calibrated: bool = False,
) -> dict[str, dict[int, float]]:
    """Cost of quantizing each allocation unit alone at each level below the top one (the top level costs 0).

    Args:
        model (`PreTrainedModel`):
            The full-precision model (its Linear modules are swapped during the measurement and restored after).
        batches (`Sequence[CalibrationBatch]`):
            Calibration batches: all of them calibrate GPT-Q's versions, [`scoring_batches`] of them measure.
        bits (`Sequence[int]`):
            The levels, high to low.
        granularity (`str`, *optional*, defaults to `"layer"`):
            What is quantized alone: each decoder layer, each block or each Linear module (see
            [`~optimum_layerwise.layers.allocation_units`]).
        measure (`str`, *optional*, defaults to `"output"`):
            `"output"` (relative squared layer-output error, one forward pass plus one layer re-run per unit and
            lower level) or `"kl"` (end-to-end KL divergence, one forward pass per unit and lower level).
        backend (`str`, *optional*, defaults to `"quanto"`), group_size (`int`, *optional*, defaults to 128):
            How layers are quantized for the measurement (use the same as for the real quantization).
        skip (`Sequence[str]`, *optional*):
            Linear modules that stay in full precision.
        calibrated (`bool`, *optional*, defaults to `False`):
            With a calibrated backend (GPT-Q), quantize each layer at each level with the backend itself, calibrated
            on the layer's full-precision inputs from `batches` (see
            [`~optimum_layerwise.sequential.calibrated_versions`]), instead of round-to-nearest on its grid.

    Returns:
        `dict[str, dict[int, float]]`: `{unit name: {bits: cost}}`, including `{top: 0.0}`, in layer order.
    """
    if measure not in SENSITIVITY_MEASURES:
        raise ValueError(f"`measure` must be one of {SENSITIVITY_MEASURES}, got {measure!r}.")
    check_granularity(granularity)
    top, lower = bits[0], list(bits[1:])
    units = allocation_units(model, skip, granularity)
    versions = LayerVersions(model, backend, group_size, skip, simulate=True)
    calibrated = calibrated and versions.backend.requires_calibration
    if measure == "output":
        costs = _output_error(model, versions, units, lower, batches, calibrated)
    else:
        if calibrated:
            levels = [top, *lower]
            versions.use_versions(
                calibrated_versions(model, batches, levels, versions.backend, group_size, versions.originals)
            )
        costs = _kl(model, versions, units, top, lower, scoring_batches(batches))
    return {name: {top: 0.0, **unit_costs} for name, unit_costs in costs.items()}


def measure_layer_costs(
    model: nn.Module,
    batches: Sequence[CalibrationBatch],
    bits: Sequence[int],
    *,
    measure: str = "output",
    backend: str = "quanto",
    group_size: int | None = 128,
    skip: Sequence[str] = (),
    calibrated: bool = False,
) -> dict[int, dict[int, float]]:
    """Cost of quantizing each decoder layer alone at each level below the top one (the top level costs 0):
    [`measure_unit_costs`] at `"layer"` granularity (≈ 2 forward passes for two levels with `"output"`), by layer
    index.

    Returns:
        `dict[int, dict[int, float]]`: `{layer: {bits: cost}}`, including `{top: 0.0}`.
    """
    costs = measure_unit_costs(
        model,
        batches,
        bits,
        measure=measure,
        backend=backend,
        group_size=group_size,
        skip=skip,
        calibrated=calibrated,
    )
    return dict(enumerate(costs.values()))


def costs_to_scores(costs: dict[int, dict[int, float]]) -> list[float]:
    """One importance score per layer from measured costs: the cost of the lowest level (higher = more important)."""
    return [max(costs[index].values()) for index in sorted(costs)]
