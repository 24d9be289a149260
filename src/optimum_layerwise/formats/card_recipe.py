"""How a layer-wise model was made, as a model card tells it: the `LayerwiseQuantizationConfig(...)` call that
reproduces the plan, the card metadata (tags, base model, dataset, license) and where the checkpoint format is
described."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCardData

from ..data.dataset_record import recorded_dataset_name
from ..data.hub_corpora import HUB_CORPORA
from ..plan.fields import BUDGET_NAMES
from ..plan.importance_methods import needs_calibration_data
from ..plan.quantization_plan import QuantizationPlan
from ..plan.request import QuantizationRequest
from .card_record import LICENSE_NAME, SAFE_TAG


BASE_TAGS = ("optimum-layerwise", "layerwise-quantization")


def checkpoint_format_lines(request: QuantizationRequest) -> list[str]:
    if request.backend == "gptq":
        return [
            'This is a standard GPT-Q checkpoint (`quant_method="gptq"`, `checkpoint_format="gptq"`): the decoder '
            "layers below the top level are listed in `quantization_config.dynamic`, so GPTQModel, vLLM and SGLang "
            "load it without optimum-layerwise. The exact plan (bits, group size and zero-points of every "
            "quantized module) is in `quantization_config.layerwise.plan`.",
        ]
    return [
        "The exact plan (bits, group size and zero-points of every quantized module) is also in `config.json` "
        "(`quantization_config.plan`)."
    ]


def card_metadata(
    request: QuantizationRequest,
    plan: QuantizationPlan,
    base_model: str | None,
    extra_tags: list[str],
    license: str | None,
) -> ModelCardData:
    used = sorted({module.bits for module in plan.modules.values()}, reverse=True)
    tags = [*BASE_TAGS, request.backend, *(f"{bits}-bit" for bits in used)]
    tags += [tag for tag in extra_tags if tag not in tags and isinstance(tag, str) and SAFE_TAG.fullmatch(tag)]
    kwargs: dict[str, Any] = {"base_model": base_model, "base_model_relation": "quantized"} if base_model else {}
    if isinstance(license, str) and LICENSE_NAME.fullmatch(license):
        kwargs["license"] = license
    hub_dataset = HUB_CORPORA.get(request.dataset) if isinstance(request.dataset, str) else None
    if hub_dataset is not None:  # offline corpora and local files have no Hub id
        kwargs["datasets"] = [hub_dataset.path]
    return ModelCardData(library_name="transformers", pipeline_tag="text-generation", tags=tags, **kwargs)


def recipe(request: QuantizationRequest, plan: QuantizationPlan) -> str:
    """`LayerwiseQuantizationConfig(...)` call reproducing the plan's choices (the bit map itself is in the table)."""
    importance = request.importance
    arguments = [f"bits={tuple(request.bits)}", f"backend={request.backend!r}"]
    if request.layer_bits is not None or plan.layer_scores is None:  # a bit map given by hand: nothing was scored
        arguments.append(f"layer_bits={dict(plan.layer_bits)}")
    else:
        arguments += [f"{name}={plan.budget[name]!r}" for name in BUDGET_NAMES if name in plan.budget]
        if not isinstance(importance, str):
            arguments.append("importance=[...]  # your own scores, listed in the table above")
        else:
            arguments.append(f"importance={importance!r}")
            if needs_calibration_data(importance):
                dataset = recorded_dataset_name(request.dataset)
                arguments.append(f"dataset={dataset!r}" if dataset else "dataset=...  # in-memory data, not recorded")
                arguments += [f"num_samples={request.num_samples}", f"seq_len={request.seq_len}"]
            if importance == "random":
                arguments.append(f"seed={request.seed}")
    arguments.append(f"group_size={request.group_size}")
    if plan.granularity != "layer":
        arguments.append(f"granularity={plan.granularity!r}")
    if request.modules_to_not_convert:
        arguments.append(f"modules_to_not_convert={request.modules_to_not_convert!r}")
    lines = []
    for argument in arguments:
        code, _, comment = argument.partition("  # ")
        lines.append(f"    {code},  # {comment}" if comment else f"    {code},")
    return "LayerwiseQuantizationConfig(\n" + "\n".join(lines) + "\n)"
