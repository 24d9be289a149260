"""Memory before loading: the prediction of a job from a checkpoint's config, and the check that picks the path (in
memory or layer by layer) or refuses, before transformers reads a weight."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from ..model.footprint import safetensors_nbytes
from ..model.shape import ModelShape
from ..pipelines.memory_estimate import PathChoice, check_fits, choose_path, estimate_scoring_memory
from ..plan.request import QuantizationRequest
from ..plan.slicing_request import SlicingRequest
from ..utils.checksums import safetensors_header


logger = logging.get_logger(__name__)

_SAFETENSORS_FLOATS = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def converted_checkpoint_bytes(files: Sequence[str | os.PathLike], dtype: torch.dtype) -> int | None:
    """Bytes of the checkpoint's floating tensors when they are stored in another dtype than `dtype` (they are
    converted while they load), `None` when they already are in `dtype` or the files are not safetensors."""
    total, converted = 0, False
    for path in files:
        if not str(path).endswith(".safetensors"):
            return None
        header, _ = safetensors_header(Path(path))
        for name, info in header.items():
            stored = _SAFETENSORS_FLOATS.get(info.get("dtype")) if name != "__metadata__" else None
            if stored is not None:
                total += safetensors_nbytes(info["shape"], info["dtype"], f"{Path(path).name}: {name}")
                converted |= stored != dtype
    return total if converted else None


def check_memory(
    model: nn.Module,
    request: QuantizationRequest | SlicingRequest,
    *,
    requested: bool | None = None,
    checkpoint_files: Sequence[str] | None = None,
) -> PathChoice:
    """Choose the path of `request` on `model` (on the meta device, before its weights load) from the predicted peak
    and the memory this process may use, and say so in one line (a warning when it runs layer by layer, else info).

    Raises:
        `MemoryError`: when no allowed path fits (nothing has been loaded yet).
    """
    shape = ModelShape.from_model(model)
    checkpoint_bytes = converted_checkpoint_bytes(checkpoint_files, shape.dtype) if checkpoint_files else None
    choice = choose_path(shape, request, requested=requested, checkpoint_bytes=checkpoint_bytes)
    # layer by layer is worth a warning (slower, writes a work folder); in memory is the plain case
    (logger.warning if choice.low_memory else logger.info)(f"Memory: {choice.summary()}.")
    return choice


def predict_memory(
    pretrained_model_name_or_path: str | os.PathLike,
    quantization_config: Any,
    dtype: str | torch.dtype = "auto",
    limit: int | None = None,
) -> PathChoice:
    """What loading `pretrained_model_name_or_path` with `quantization_config` would need, without loading it.

    Args:
        pretrained_model_name_or_path (`str` or `os.PathLike`):
            A local checkpoint folder or a Hub model id (only its `config.json` is read).
        quantization_config ([`LayerwiseQuantizationConfig`] or [`LayerwiseSlicingConfig`]):
            The job.
        dtype (`str` or `torch.dtype`, *optional*, defaults to `"auto"`):
            The dtype the model would load in (`"auto"`: the checkpoint's).
        limit (`int`, *optional*):
            The memory to plan for (default: what this process may use, see
            [`~optimum_layerwise.utils.system_memory.process_memory_limit`]).

    Returns:
        [`PathChoice`]: the path that would be taken, why, and the prediction of every path.

    Raises:
        `MemoryError`: when no path fits, as loading would.

    Example:

    ```python
    >>> from optimum_layerwise import LayerwiseQuantizationConfig, predict_memory
    >>> choice = predict_memory("HuggingFaceTB/SmolLM2-135M", LayerwiseQuantizationConfig(bits=[4, 2], target_bits=3))
    >>> print(choice.summary())  # doctest: +SKIP
    ```
    """
    shape, checkpoint_bytes = _checkpoint_shape(pretrained_model_name_or_path, dtype)
    request = quantization_config.request
    return choose_path(
        shape, request, requested=getattr(request, "low_memory", None), checkpoint_bytes=checkpoint_bytes, limit=limit
    )


def predict_scoring_memory(
    pretrained_model_name_or_path: str | os.PathLike,
    request: QuantizationRequest,
    dtype: str | torch.dtype = "auto",
    limit: int | None = None,
) -> PathChoice:
    """What scoring the decoder layers of `pretrained_model_name_or_path` with `request.importance` would need (the
    `score` command: the whole model in memory), without loading it.

    Args:
        pretrained_model_name_or_path, dtype, limit:
            As for [`predict_memory`].
        request ([`QuantizationRequest`]):
            The importance method and its calibration settings.

    Raises:
        `MemoryError`: when it does not fit.
    """
    shape, checkpoint_bytes = _checkpoint_shape(pretrained_model_name_or_path, dtype)
    return check_fits(estimate_scoring_memory(shape, request, checkpoint_bytes=checkpoint_bytes), limit)


def _checkpoint_shape(path: str | os.PathLike, dtype: str | torch.dtype) -> tuple[ModelShape, int | None]:
    """The shape of the model at `path` (read from its `config.json`) in `dtype`, and its checkpoint's bytes when they
    are stored in another dtype (see [`converted_checkpoint_bytes`])."""
    from transformers import AutoConfig

    shape = ModelShape.from_config(AutoConfig.from_pretrained(path), None if dtype == "auto" else _as_dtype(dtype))
    files = sorted(Path(path).glob("*.safetensors"))
    return shape, converted_checkpoint_bytes(files, shape.dtype) if files else None


def _as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(value, torch.dtype):
        raise ValueError(f"`dtype` must be 'auto' or a torch dtype such as 'bfloat16', got {dtype!r}.")
    return value
