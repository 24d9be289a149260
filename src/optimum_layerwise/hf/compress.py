"""Quantize or slice a loaded model and record the result on it: the pipelines run on the request value; the config
holding the request and its plan becomes the model's `quantization_config` (what `save_pretrained` writes)."""

from __future__ import annotations

import copy

from torch import nn

from ..pipelines import quantize as quantize_pipeline
from ..pipelines import slice as slice_pipeline
from .config import LayerwiseQuantizationConfig
from .slicing_config import LayerwiseSlicingConfig


def quantize_model(
    model: nn.Module,
    config: LayerwiseQuantizationConfig,
    skip: list[str] | None = None,
    low_memory: bool | None = None,
) -> LayerwiseQuantizationConfig:
    """Quantize `model` in place as `config` asks (see
    [`~optimum_layerwise.pipelines.quantize.quantize_model`]: plan, pack layer by layer, held-out check).

    Args:
        model (`PreTrainedModel`):
            A full-precision causal LM. Decoder layers offloaded by accelerate (cpu or disk `device_map`) are read
            into memory one at a time.
        config ([`LayerwiseQuantizationConfig`]):
            What to do. Not modified: the same config can quantize several models.
        skip (`list[str]`, *optional*):
            Linear modules to keep in full precision (defaults to `config.modules_to_not_convert`).
        low_memory (`bool`, *optional*):
            Write each quantized layer to disk at once instead of keeping it in memory; defaults to
            `config.low_memory`.

    Returns:
        [`LayerwiseQuantizationConfig`]: a new config, the request plus its `plan`; it is also set as
        `model.config.quantization_config` when the model has a config.
    """
    result = config.with_plan(quantize_pipeline.quantize_model(model, config.request, skip, low_memory))
    if getattr(model, "config", None) is not None:
        model.config.quantization_config = result
    return result


def slice_model(model: nn.Module, config: LayerwiseSlicingConfig) -> LayerwiseSlicingConfig:
    """Slice `model` in place as `config` asks (see [`~optimum_layerwise.pipelines.slice.slice_model`]).

    Returns:
        [`LayerwiseSlicingConfig`]: a new config, the request plus its `plan`; it is also set as
        `model.config.quantization_config`.
    """
    result = config.with_plan(slice_pipeline.slice_model(model, config.request))
    model.config.quantization_config = result
    return result


def slice_then_quantize(
    model: nn.Module, config: LayerwiseQuantizationConfig, skip: list[str]
) -> LayerwiseQuantizationConfig:
    """Slice `model` by `config.slicing`, then quantize it by `config` (see
    [`~optimum_layerwise.pipelines.slice.slice_then_quantize`]).

    Returns:
        [`LayerwiseQuantizationConfig`]: the quantization config with its plan, holding the slicing config (with the
        calibration data it used) with its plan; also set as `model.config.quantization_config`.
    """
    slicing_plan, plan = slice_pipeline.slice_then_quantize(model, config.request, skip)
    slicing = copy.copy(config.slicing)
    slicing.request = config.request.slicing_request()
    result = config.with_plan(plan)
    result.slicing = slicing.with_plan(slicing_plan)
    model.config.quantization_config = result
    return result
