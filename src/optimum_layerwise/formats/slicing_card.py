"""The parts of a model card that describe slicing: the card of a sliced model, and the width table that the card of
a sliced-then-quantized model shows too. Rendered with the helpers of `optimum_layerwise.formats.model_card`."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from ..plan.quality import SLICING_WORDING, QualityCheck
from ..plan.slicing_plan import SlicingPlan
from ..plan.slicing_request import SlicingRequest


SLICING_TAGS = ("optimum-layerwise", "layerwise-slicing")


def width_table(request: SlicingRequest, plan: SlicingPlan) -> list[str]:
    """Markdown lines: how the widths were chosen, then each decoder layer's score, ratio and width."""
    importance = request.importance if isinstance(request.importance, str) else "custom scores"
    lines = [
        f"Residual stream of {plan.hidden_size} channels sliced to a mean sparsity of **{plan.sparsity:.3f}** "
        f"(importance `{importance}`, slicing base {request.slicing_base():.3f}); "
        + (
            f"embeddings and head at {plan.widths[0]} and {plan.head_width} channels."
            if plan.embeddings_rotated
            else "tied embeddings and head kept at full width."
        ),
        "",
        "| layer | importance | ratio | width |",
        "|---:|---:|---:|---:|",
    ]
    for index, width in enumerate(plan.widths):
        score = f"{plan.scores[index]:.6g}" if plan.scores is not None else "-"
        lines.append(f"| {index} | {score} | {plan.ratios[index]:.3f} | {width} |")
    return [*lines, ""]


def slicing_card_lines(
    model: nn.Module,
    request: SlicingRequest,
    plan: SlicingPlan,
    *,
    title: str,
    source: str | None,
    repo_id: str | None,
) -> list[str]:
    """The body of a sliced model's card below its marker line."""
    architecture = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    parameters = sum(parameter.numel() for parameter in model.parameters())
    load = f"{repo_id!r}" if repo_id else '"path/to/this/folder"'
    return [
        f"# {title}",
        "",
        f"{source or f'A {architecture} model'} sliced **layer by layer** with optimum-layerwise: the residual "
        "stream is rotated by its principal axes (SliceGPT) and each decoder layer keeps its own number of channels, "
        "more redundant layers fewer (DynamicSlicing).",
        "",
        f"Parameters: {parameters:,} (the shortcut matrices included). The tensors are plain floats of the sliced "
        "shapes; the widths are in `config.json` (`quantization_config.plan`).",
        "",
        *quality_lines(plan.quality),
        "## Usage",
        "",
        "```python",
        'import optimum_layerwise  # first: registers quant_method "layerwise_slicing" with transformers',
        "from transformers import AutoModelForCausalLM",
        "",
        f"model = AutoModelForCausalLM.from_pretrained({load})",
        "```",
        "",
        "## Widths per layer",
        "",
        *width_table(request, plan),
    ]


def quality_lines(quality: dict | None) -> list[str]:
    """The held-out check made when the model was sliced, as Markdown lines (none when it was not measured)."""
    if quality is None:
        return []
    return [f"Held-out check when it was sliced: {QualityCheck.from_dict(quality).summary(*SLICING_WORDING)}", ""]


def slicing_card_metadata(base_model: str | None, tags: list[str], license: str | None) -> ModelCardData:
    kwargs: dict[str, Any] = {"base_model": base_model} if base_model else {}
    if license:
        kwargs["license"] = license
    return ModelCardData(
        library_name="transformers", pipeline_tag="text-generation", tags=[*SLICING_TAGS, *tags], **kwargs
    )


def build_slicing_card(lines: list[str], metadata: ModelCardData) -> ModelCard:
    """The card from its Markdown `lines` (marker line first) and Hub `metadata`."""
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines))
