"""Slice a loaded model: score its layers, choose their widths, rotate and slice, check the result on held-out text."""

from __future__ import annotations

from torch import nn
from transformers.utils import logging

from ..data.calibration import calibration_batches
from ..importance.scoring import score_layers
from ..model.layers import decoder_layers
from ..model.perplexity import prepare_windows, score_windows
from ..plan.quality import SLICING_WORDING as QUALITY_WORDING
from ..plan.quality import QualityCheck
from ..plan.quantization_plan import QuantizationPlan
from ..plan.request import QuantizationRequest
from ..plan.slicing_plan import SlicingPlan
from ..plan.slicing_ratios import dynamic_ratios, layer_width
from ..plan.slicing_request import CONSTANT, SlicingRequest
from ..slicing.architecture import check_sliceable, hidden_size
from ..slicing.layers import ties_embeddings
from ..slicing.rotation import rotate_and_slice
from ..utils.units import format_count
from .quality_check import check_held_out
from .quantize import calibration_split, quantize_model


logger = logging.get_logger(__name__)

# the Linear modules slicing adds on the residual path, kept in full precision when the sliced model is quantized
# (unless `quantize_shortcuts`)
SHORTCUTS = ("attn_shortcut", "mlp_shortcut")


def plan_widths(
    num_layers: int,
    full_width: int,
    request: SlicingRequest,
    scores: list[float] | None,
    embeddings_rotated: bool = True,
) -> SlicingPlan:
    """The widths of `request`'s request for a model of `num_layers` layers of `full_width` channels, from the layers'
    importance `scores` (`None` for constant slicing); `embeddings_rotated=False` keeps the embeddings and the head
    at full width."""
    if scores is None:
        ratios = [float(request.sparsity)] * num_layers
    else:
        ratios = dynamic_ratios(scores, request.sparsity, request.slicing_base())
    widths = tuple(layer_width(full_width, ratio, request.round_to) for ratio in ratios)
    return SlicingPlan(
        full_width,
        widths,
        widths[-1] if embeddings_rotated else full_width,
        tuple(ratios),
        tuple(scores) if scores is not None else None,
        embeddings_rotated=embeddings_rotated,
    )


def slice_model(model: nn.Module, request: SlicingRequest) -> SlicingPlan:
    """Slice `model` in place: score its decoder layers, give each its width, rotate and slice the residual stream
    layer by layer, and score held-out calibration windows before and after (logged as one line, loudly when the
    model collapsed).

    Args:
        model (`PreTrainedModel`):
            A full-precision Llama, Mistral, Qwen2 or Qwen3 causal LM.
        request ([`SlicingRequest`]):
            What to do. Not modified.

    Returns:
        [`SlicingPlan`]: the width of every layer, with the held-out quality when it was measured.
    """
    request.check_sliceable_request()
    check_sliceable(model)
    windows, held_out = calibration_split(model, request)
    batches = calibration_batches(windows, request.tokenizer, num_samples=len(windows), seq_len=request.seq_len)
    held_out, context = prepare_windows(held_out, request.tokenizer)
    reference = score_windows(model, held_out, context, desc="Held-out check, unsliced") if held_out else None
    layers = decoder_layers(model)
    scores = (
        None if request.importance == CONSTANT else score_layers(model, request.importance, batches, seed=request.seed)
    )
    # a model that ties its embeddings keeps them: untying would add a vocabulary-sized matrix
    plan = plan_widths(len(layers), hidden_size(model), request, scores, embeddings_rotated=not ties_embeddings(model))
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
            "removes. Slice more (a higher `sparsity`), or quantize instead (QuantizationRequest)."
        )
    if reference is None:
        logger.warning(f"{done}; quality not measured (no held-out calibration windows).")
    else:
        check = check_held_out(
            model, held_out, context, reference.perplexity, request.dataset, request.seq_len, "Held-out check, sliced"
        )
        plan = plan.replace(quality=check.to_dict())
        logger.warning(f"{done}: {check.summary(*QUALITY_WORDING)}")
    return plan


def slice_then_quantize(
    model: nn.Module, request: QuantizationRequest, skip: list[str]
) -> tuple[SlicingPlan, QuantizationPlan]:
    """Slice `model` by `request.slicing`, then quantize the sliced model by `request` ([`quantize_model`], `skip`
    kept in full precision: the [`SHORTCUTS`] unless `request.quantize_shortcuts`), and log the held-out check of the
    result against the original model (the quantization's held-out windows, scored before slicing).

    Returns:
        `tuple[SlicingPlan, QuantizationPlan]`: the plan of the slicing and the plan of the quantization.
    """
    _, held_out = calibration_split(model, request)
    held_out, context = prepare_windows(held_out, request.tokenizer)
    original = score_windows(model, held_out, context, desc="Held-out check, original") if held_out else None
    slicing_plan = slice_model(model, request.slicing_request())
    plan = quantize_model(model, request, skip=skip, low_memory=False)
    if original is not None and plan.quality is not None:
        check = QualityCheck.from_dict({**plan.quality, "unquantized": original.perplexity})
        logger.warning(f"Sliced and quantized: {check.summary('original')}")
    return slicing_plan, plan
