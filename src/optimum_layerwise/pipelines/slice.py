"""Slice a loaded model: score its layers, choose their widths, rotate and slice, check the result on held-out text."""

from __future__ import annotations

import copy

from torch import nn
from transformers.utils import logging

from ..data.calibration import calibration_batches
from ..hf.config import LayerwiseQuantizationConfig
from ..hf.slicing_config import CONSTANT, LayerwiseSlicingConfig
from ..importance.scoring import score_layers
from ..model.layers import decoder_layers
from ..model.perplexity import QualityCheck, check_held_out, prepare_windows, score_windows
from ..plan.slicing_plan import SlicingPlan
from ..plan.slicing_ratios import dynamic_ratios, layer_width
from ..slicing.architecture import check_sliceable, hidden_size
from ..slicing.layers import ties_embeddings
from ..slicing.rotation import rotate_and_slice
from ..utils.units import format_count
from .quantize import calibration_split, quantize_model


logger = logging.get_logger(__name__)

# the Linear modules slicing adds on the residual path, kept in full precision when the sliced model is quantized
# (unless `quantize_shortcuts`)
SHORTCUTS = ("attn_shortcut", "mlp_shortcut")
# how the held-out check's line speaks of slicing (see QualityCheck.summary)
QUALITY_WORDING = ("unsliced", "slice less (a lower `sparsity`)", "Consider a lower `sparsity`")


def plan_widths(
    num_layers: int,
    full_width: int,
    config: LayerwiseSlicingConfig,
    scores: list[float] | None,
    embeddings_rotated: bool = True,
) -> SlicingPlan:
    """The widths of `config`'s request for a model of `num_layers` layers of `full_width` channels, from the layers'
    importance `scores` (`None` for constant slicing); `embeddings_rotated=False` keeps the embeddings and the head
    at full width."""
    if scores is None:
        ratios = [float(config.sparsity)] * num_layers
    else:
        ratios = dynamic_ratios(scores, config.sparsity, config.slicing_base())
    widths = tuple(layer_width(full_width, ratio, config.round_to) for ratio in ratios)
    return SlicingPlan(
        full_width,
        widths,
        widths[-1] if embeddings_rotated else full_width,
        tuple(ratios),
        tuple(scores) if scores is not None else None,
        embeddings_rotated=embeddings_rotated,
    )


def slice_model(model: nn.Module, config: LayerwiseSlicingConfig) -> LayerwiseSlicingConfig:
    """Slice `model` in place: score its decoder layers, give each its width, rotate and slice the residual stream
    layer by layer, and score held-out calibration windows before and after (logged as one line, loudly when the
    model collapsed).

    Args:
        model (`PreTrainedModel`):
            A full-precision Llama, Mistral, Qwen2 or Qwen3 causal LM.
        config ([`LayerwiseSlicingConfig`]):
            What to do. Not modified.

    Returns:
        [`LayerwiseSlicingConfig`]: a new config, the request plus its `plan`; it is also set as
        `model.config.quantization_config`.
    """
    config.check_sliceable_request()
    check_sliceable(model)
    windows, held_out = calibration_split(model, config)
    batches = calibration_batches(windows, config.tokenizer, num_samples=len(windows), seq_len=config.seq_len)
    held_out, context = prepare_windows(held_out, config.tokenizer)
    reference = score_windows(model, held_out, context, desc="Held-out check, unsliced") if held_out else None
    layers = decoder_layers(model)
    scores = (
        None if config.importance == CONSTANT else score_layers(model, config.importance, batches, seed=config.seed)
    )
    # a model that ties its embeddings keeps them: untying would add a vocabulary-sized matrix
    plan = plan_widths(len(layers), hidden_size(model), config, scores, embeddings_rotated=not ties_embeddings(model))
    parameters_before = sum(parameter.numel() for parameter in model.parameters())
    rotate_and_slice(model, plan, batches)
    parameters_after = sum(parameter.numel() for parameter in model.parameters())
    done = (
        f"Sliced {len(layers)} decoder layers to {plan.sparsity:.1%} mean sparsity (widths {min(plan.widths)}-"
        f"{max(plan.widths)} of {plan.hidden_size}; parameters {format_count(parameters_before)} -> "
        f"{format_count(parameters_after)}, shortcuts included)"
    )
    if parameters_after >= parameters_before:
        logger.warning(
            f"Slicing did not make the model smaller ({format_count(parameters_before)} -> "
            f"{format_count(parameters_after)} parameters): at hidden size {plan.hidden_size} the two shortcut "
            f"matrices of each layer (about 2 x width^2 parameters) cost more than slicing {plan.sparsity:.0%} "
            "removes. Slice more (a higher `sparsity`), or quantize instead (LayerwiseQuantizationConfig)."
        )
    if reference is None:
        logger.warning(f"{done}; quality not measured (no held-out calibration windows).")
    else:
        check = check_held_out(
            model, held_out, context, reference.perplexity, config.dataset, config.seq_len, "Held-out check, sliced"
        )
        plan = plan.replace(quality=check.to_dict())
        logger.warning(f"{done}: {check.summary(*QUALITY_WORDING)}")
    result = config.with_plan(plan)
    model.config.quantization_config = result
    return result


def slice_then_quantize(
    model: nn.Module, config: LayerwiseQuantizationConfig, skip: list[str]
) -> LayerwiseQuantizationConfig:
    """Slice `model` by `config.slicing`, then quantize the sliced model by `config` ([`quantize_model`], `skip`
    kept in full precision: the [`SHORTCUTS`] unless `config.quantize_shortcuts`), and log the held-out check of the
    result against the original model (the quantization's held-out windows, scored before slicing).

    Returns:
        [`LayerwiseQuantizationConfig`]: the quantization config with its plan, holding the slicing config with its
        plan.
    """
    _, held_out = calibration_split(model, config)
    held_out, context = prepare_windows(held_out, config.tokenizer)
    original = score_windows(model, held_out, context, desc="Held-out check, original") if held_out else None
    request = copy.copy(config)
    request.slicing = slice_model(model, config.slicing_request())
    result = quantize_model(model, request, skip=skip, low_memory=False)
    if original is not None and result.plan.quality is not None:
        check = QualityCheck.from_dict({**result.plan.quality, "unquantized": original.perplexity})
        logger.warning(f"Sliced and quantized: {check.summary('original')}")
    return result
