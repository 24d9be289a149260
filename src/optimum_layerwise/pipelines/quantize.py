"""Quantize a loaded model: make the plan, pack the modules layer by layer, check the result on held-out text."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import weakref
from pathlib import Path

import torch
from torch import nn
from transformers.utils import logging

from ..data.calibration import CalibrationBatch, calibration_batches, split_windows
from ..model.layers import (
    decoder_layers,
    decoder_layers_path,
    is_skipped,
    quantizable_linears,
    set_submodule,
    vocab_size,
)
from ..model.offload import PackedLayerStore, materialized, return_memory_after_each_layer
from ..model.perplexity import prepare_windows, score_windows
from ..plan.quantization_plan import QuantizationPlan
from ..plan.request import QuantizationRequest
from ..quantize.backends import QuantizationBackend, backend_for
from ..quantize.sequential import quantize_sequentially
from ..utils.system_memory import peak_resident_bytes, return_freed_memory
from ..utils.units import format_bytes
from .planning import make_plan
from .quality_check import check_held_out


logger = logging.get_logger(__name__)


def calibration_split(model: nn.Module, request: QuantizationRequest) -> tuple[list[list[int]], list[list[int]]]:
    """`request`'s calibration data, tokenized once and checked against `model`'s vocabulary: the calibration windows
    and the held-out windows of the quality check (both empty without data; no held-out ones with
    `quality_windows=0`)."""
    if request.dataset is None:
        return [], []
    return split_windows(
        request.dataset,
        request.tokenizer,
        num_samples=request.num_samples,
        seq_len=request.seq_len,
        seed=request.seed,
        vocab_size=vocab_size(model),
        held_out=request.quality_windows,
    )


def _batches(windows: list[list[int]], request: QuantizationRequest) -> list[CalibrationBatch]:
    """The calibration windows as padded batches, built once and shared by scoring and GPT-Q's calibration."""
    if not windows:
        return []
    return calibration_batches(windows, request.tokenizer, num_samples=len(windows), seq_len=request.seq_len)


def _why_no_quality(request: QuantizationRequest) -> str:
    if request.quality_windows == 0:
        return "quality_windows=0"
    if request.dataset is None:
        return "no calibration data (pass `dataset`, e.g. 'shakespeare', to check the result on held-out text)"
    return (
        f"no calibration text is left over after num_samples={request.num_samples} windows of "
        f"seq_len={request.seq_len} (give more text or lower num_samples)"
    )


def _warn_unmatched(model: nn.Module, names: list[str]) -> None:
    path = decoder_layers_path(model)
    linear_names = [
        name for name, module in model.named_modules() if name.startswith(f"{path}.") and isinstance(module, nn.Linear)
    ]
    unmatched = [pattern for pattern in names if not any(is_skipped(name, [pattern]) for name in linear_names)]
    if unmatched:
        logger.warning(
            f"`modules_to_not_convert` names {unmatched} match no Linear module of the decoder layers; they are "
            "ignored (give full names, suffixes such as 'mlp.down_proj' or names such as 'down_proj')."
        )


def packed_layer_store(model: nn.Module, request: QuantizationRequest) -> PackedLayerStore:
    """Where low-memory quantization writes the quantized layers: `request.work_dir`, else a temporary folder removed
    when `model` is garbage-collected."""
    if request.work_dir is not None:
        folder = Path(request.work_dir)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="optimum-layerwise-layers-"))
        weakref.finalize(model, shutil.rmtree, folder, True)
    logger.info(f"Low-memory quantization: quantized layers go to {folder} until the model is saved.")
    return PackedLayerStore(folder)


def quantize_model(
    model: nn.Module,
    request: QuantizationRequest,
    skip: list[str] | None = None,
    low_memory: bool | None = None,
) -> QuantizationPlan:
    """Quantize `model` in place: plan (score its decoder layers, allocate bits), then replace each layer's Linear
    modules by packed ones with their planned settings, one layer at a time (full-precision weights are released as
    it goes), and score held-out calibration windows before and after (logged as one line, loudly when the model
    collapsed).

    Args:
        model (`PreTrainedModel`):
            A full-precision causal LM. Decoder layers offloaded by accelerate (cpu or disk `device_map`) are read
            into memory one at a time.
        request ([`QuantizationRequest`]):
            What to do. Not modified: the same request can quantize several models.
        skip (`list[str]`, *optional*):
            Linear modules to keep in full precision (defaults to `request.modules_to_not_convert`).
        low_memory (`bool`, *optional*):
            Write each quantized layer to disk at once ([`packed_layer_store`]) instead of keeping it in memory;
            defaults to `request.low_memory`.

    Returns:
        [`QuantizationPlan`]: what was done, with the held-out quality when it was measured.
    """
    request.check_quantizable()
    low_memory = bool(request.low_memory) if low_memory is None else low_memory
    if low_memory:
        _check_low_memory_options(request)
        return_memory_after_each_layer(decoder_layers(model))
    backend = backend_for(request)
    backend.require()
    skip = list(request.modules_to_not_convert or []) if skip is None else skip
    _warn_unmatched(model, request.modules_to_not_convert or [])
    windows, held_out = calibration_split(model, request)
    batches = _batches(windows, request)
    held_out, context = prepare_windows(held_out, request.tokenizer)
    store = packed_layer_store(model, request) if low_memory else None
    fingerprint = _fingerprint(model, request, windows + held_out) if store is not None else None
    saved = store.resume(fingerprint) if store is not None else None
    if saved is not None:  # an interrupted run of the same job: its plan, reference and finished layers
        plan, reference = QuantizationPlan.from_dict(saved["plan"]), saved["reference_perplexity"]
        logger.warning(f"Resuming from {store.folder}: {len(store.done)} of {len(plan.layer_bits)} layers are done.")
    else:
        reference = score_windows(model, held_out, context, desc="Held-out check, unquantized") if held_out else None
        reference = reference.perplexity if reference is not None else None
        plan = make_plan(model, request, backend, skip, batches)
        if store is not None:
            store.start(fingerprint, plan=plan.to_dict(), reference_perplexity=reference)
    if backend.requires_calibration:
        quantize_sequentially(model, plan, batches, backend, skip, store)
    else:
        _quantize_round_to_nearest(model, plan, backend, skip, store)
    done = (
        f"Quantized {len(plan.layer_bits)} decoder layers to {plan.average_bits:.2f} average bits (peak memory of "
        f"this process: {format_bytes(peak_resident_bytes())})"
    )
    if reference is None:
        logger.warning(f"{done}; quality not measured: {_why_no_quality(request)}.")
    else:
        check = check_held_out(
            model, held_out, context, reference, request.dataset, request.seq_len, desc="Held-out check, quantized"
        )
        plan = plan.replace(quality=check.to_dict())
        logger.warning(f"{done}: {check.summary()}")
    return plan


def _fingerprint(model: nn.Module, request: QuantizationRequest, windows: list[list[int]]) -> str:
    """What a resumed quantization must match: the request, the model (its name and configuration) and the calibration
    tokens."""
    model_config = getattr(model, "config", None)
    identity = {
        "request": request.to_dict(),
        "model": getattr(model_config, "_name_or_path", None),
        "architecture": (
            {key: value for key, value in model_config.to_diff_dict().items() if key != "quantization_config"}
            if model_config is not None
            else None
        ),
        "tokens": hashlib.sha256(json.dumps(windows).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _check_low_memory_options(request: QuantizationRequest) -> None:
    if request.importance == "sensitivity_kl":
        raise ValueError(
            "importance='sensitivity_kl' runs the whole model once per layer and level, which low-memory "
            "quantization cannot afford: use importance='sensitivity' (each layer's output error) or low_memory=False."
        )


def _quantize_round_to_nearest(
    model: nn.Module,
    plan: QuantizationPlan,
    backend: QuantizationBackend,
    skip: list[str],
    store: PackedLayerStore | None,
) -> None:
    progress = logging.tqdm(total=len(plan.layer_bits), desc=f"Quantizing layers ({backend.name})", unit="layer")
    with torch.no_grad():
        for index, layer, linears in quantizable_linears(model, skip):
            settings = plan.settings_of(index, linears)
            if store is None or not store.restore(index, layer, settings, backend):  # else done by an earlier run
                with materialized(layer):
                    packed = {
                        name: backend.quantize_linear(linear, module.bits, module.group_size)
                        for name, (linear, module) in settings.items()
                    }
                for name, module in packed.items():
                    set_submodule(layer, name, module)
                if store is not None:
                    store.offload(index, layer, packed)
            return_freed_memory()
            progress.update()
    progress.close()
