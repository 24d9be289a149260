"""Score, allocate, then quantize a loaded model layer by layer."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from transformers.utils import logging

from .allocation import allocate_bits, allocate_bits_by_cost
from .backends import QuantizationBackend
from .calibration import CalibrationBatch, calibration_batches, split_windows
from .config import LayerwiseQuantizationConfig
from .corpora import recorded_dataset_name
from .footprint import tensor_nbytes
from .importance import SENSITIVITY_METHODS, compute_importance
from .importance.sensitivity import costs_to_scores, measure_layer_costs
from .layers import decoder_layers, decoder_layers_path, is_skipped, linear_modules, set_submodule, vocab_size
from .plan import average_bits, check_layer_bits
from .quality import QualityCheck, prepare_windows, score_windows
from .sequential import quantize_sequentially
from .units import parse_memory


logger = logging.get_logger(__name__)


def quantizable_linears(model: nn.Module, skip: list[str]) -> Iterator[tuple[int, nn.Module, dict[str, nn.Linear]]]:
    """Yield `(index, layer, {name: Linear})` for every decoder layer, leaving out `skip`."""
    path = decoder_layers_path(model)
    for index, layer in enumerate(model.get_submodule(path)):
        linears = linear_modules(layer, skip, prefix=f"{path}.{index}")
        if not linears:
            raise ValueError(
                f"Decoder layer {index} has no Linear module left to quantize (see `modules_to_not_convert`)."
            )
        yield index, layer, linears


def layer_sizes(
    model: nn.Module, config: LayerwiseQuantizationConfig, backend: QuantizationBackend, skip: list[str]
) -> tuple[list[dict[int, int]], int]:
    """Exact bytes of every decoder layer at every level, and the bytes outside the decoder layers.

    Returns:
        `tuple[list[dict[int, int]], int]`: `([{bits: bytes}, ...], fixed_bytes)`.
    """
    sizes = []
    for _, layer, linears in quantizable_linears(model, skip):
        weights = sum(linear.weight.numel() * linear.weight.element_size() for linear in linears.values())
        rest = tensor_nbytes(layer) - weights
        sizes.append(
            {
                bits: rest
                + sum(
                    backend.linear_nbytes(
                        linear.out_features,
                        linear.in_features,
                        bits,
                        backend.layer_group_size(linear.in_features, config.group_size),
                        linear.weight.dtype,
                    )
                    for linear in linears.values()
                )
                for bits in config.bits
            }
        )
    fixed = tensor_nbytes(model) - tensor_nbytes(decoder_layers(model))
    return sizes, fixed


def calibration_split(
    model: nn.Module, config: LayerwiseQuantizationConfig
) -> tuple[list[list[int]], list[list[int]]]:
    """`config`'s calibration data, tokenized once and checked against `model`'s vocabulary: the calibration windows
    and the held-out windows of the quality check (both empty without data; no held-out ones with
    `quality_windows=0`)."""
    if config.dataset is None:
        return [], []
    return split_windows(
        config.dataset,
        config.tokenizer,
        num_samples=config.num_samples,
        seq_len=config.seq_len,
        seed=config.seed,
        vocab_size=vocab_size(model),
        held_out=config.quality_windows,
    )


def _batches(windows: list[list[int]], config: LayerwiseQuantizationConfig) -> list[CalibrationBatch]:
    return calibration_batches(windows, config.tokenizer, num_samples=len(windows), seq_len=config.seq_len)


def _why_no_quality(config: LayerwiseQuantizationConfig) -> str:
    if config.quality_windows == 0:
        return "quality_windows=0"
    if config.dataset is None:
        return "no calibration data (pass `dataset`, e.g. 'shakespeare', to check the result on held-out text)"
    return (
        f"no calibration text is left over after num_samples={config.num_samples} windows of seq_len={config.seq_len}"
        " (give more text or lower num_samples)"
    )


def plan_layer_bits(
    model: nn.Module,
    config: LayerwiseQuantizationConfig,
    backend: QuantizationBackend,
    skip: list[str],
    windows: list[list[int]] | None = None,
) -> tuple[dict[int, int], list[float] | None]:
    """Importance scores and the bit map for `model` under `config`'s budget (or its explicit `layer_bits`);
    `windows` are the calibration windows of [`calibration_split`] (computed here when not given)."""
    num_layers = len(decoder_layers(model))
    if config.layer_bits is not None:
        check_layer_bits(config.layer_bits, num_layers, config.bits)
        return dict(config.layer_bits), config.layer_scores
    if not any(getattr(config, name) is not None for name in ("target_bits", "memory_budget", "num_low_bit_layers")):
        config.target_bits = config.default_target_bits()
        logger.info(f"No budget given: using target_bits={config.target_bits} (mean of the highest and lowest level).")
    sizes, fixed = layer_sizes(model, config, backend, skip)
    if config.memory_budget is not None:
        largest = fixed + sum(size[max(config.bits)] for size in sizes)
        if parse_memory(config.memory_budget) >= largest:
            logger.warning(f"memory_budget={config.memory_budget} fits every layer at {max(config.bits)} bits.")
    if windows is None:
        windows = calibration_split(model, config)[0]
    if config.layer_costs is not None or (
        isinstance(config.importance, str) and config.importance in SENSITIVITY_METHODS
    ):
        if config.layer_costs is None:
            config.layer_costs = measure_layer_costs(
                model,
                _batches(windows, config),
                config.bits,
                measure=SENSITIVITY_METHODS[config.importance],
                backend=backend,
                group_size=config.group_size,
                skip=skip,
            )
        elif len(config.layer_costs) != len(sizes):
            raise ValueError(
                f"`layer_costs` covers {len(config.layer_costs)} layers but the model has {len(sizes)} decoder layers."
            )
        layer_bits = allocate_bits_by_cost(
            config.layer_costs,
            config.bits,
            target_bits=config.target_bits,
            memory_budget=config.memory_budget,
            num_low_bit_layers=config.num_low_bit_layers,
            layer_sizes=sizes,
            fixed_bytes=fixed,
        )
        return layer_bits, costs_to_scores(config.layer_costs)
    scores = compute_importance(
        model,
        config.importance,
        windows or None,
        config.tokenizer,
        num_samples=max(len(windows), 1),
        seq_len=config.seq_len,
        seed=config.seed,
        skip=skip,
    )
    layer_bits = allocate_bits(
        scores,
        config.bits,
        target_bits=config.target_bits,
        memory_budget=config.memory_budget,
        num_low_bit_layers=config.num_low_bit_layers,
        layer_sizes=sizes,
        fixed_bytes=fixed,
    )
    return layer_bits, scores


def applied_settings(
    model: nn.Module,
    layer_bits: dict[int, int],
    backend: QuantizationBackend,
    config: LayerwiseQuantizationConfig,
    skip: list[str],
) -> tuple[dict[int, dict], dict[str, int | None] | None]:
    """What quantizing with `layer_bits` applies: the settings of each bit width in use, and every Linear whose group
    size differs from its level's (by full module name). Called on the full-precision model."""
    levels = {bits: backend.level_settings(bits, config.group_size) for bits in sorted(set(layer_bits.values()))}
    overrides = {}
    path = decoder_layers_path(model)
    for index, _, linears in quantizable_linears(model, skip):
        nominal = levels[layer_bits[index]]["group_size"]
        for name, linear in linears.items():
            applied = backend.layer_group_size(linear.in_features, nominal)
            if applied != nominal:
                overrides[f"{path}.{index}.{name}"] = applied
    return levels, overrides or None


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


def _check_materialized(model: nn.Module) -> None:
    offloaded = sorted({name.rsplit(".", 1)[0] for name, p in model.named_parameters() if p.is_meta})
    if offloaded:
        raise ValueError(
            "Quantizing while loading needs every weight in memory, but these modules are offloaded (cpu/disk "
            f"device_map): {offloaded[:5]}{' ...' if len(offloaded) > 5 else ''}. Load without offload to quantize, "
            "save, then load the saved checkpoint with any device_map."
        )


def quantize_model(model: nn.Module, config: LayerwiseQuantizationConfig, skip: list[str] | None = None) -> None:
    """Quantize `model` in place: score its decoder layers, allocate bits, then replace each layer's Linear modules by
    packed ones at that layer's bits, one layer at a time (full-precision weights are released as it goes).

    On return, `config.layer_bits` and `config.layer_scores` hold the plan, and `config.quality` the perplexity of
    held-out calibration windows before and after quantizing (logged as one line, loudly when the model collapsed).

    Args:
        model (`PreTrainedModel`):
            A full-precision causal LM with all weights in memory.
        config ([`LayerwiseQuantizationConfig`]):
            What to do; updated with the plan.
        skip (`list[str]`, *optional*):
            Linear modules to keep in full precision (defaults to `config.modules_to_not_convert`).
    """
    config.check_quantizable()
    _check_materialized(model)
    backend = config.quantization_backend()
    backend.require()
    skip = list(config.modules_to_not_convert or []) if skip is None else skip
    _warn_unmatched(model, config.modules_to_not_convert or [])
    windows, held_out = calibration_split(model, config)
    held_out, context = prepare_windows(held_out, config.tokenizer)
    reference = score_windows(model, held_out, context, desc="Held-out check, unquantized") if held_out else None
    layer_bits, scores = plan_layer_bits(model, config, backend, skip, windows)
    settings = applied_settings(model, layer_bits, backend, config, skip)
    if backend.requires_calibration:
        linears = [linears for _, _, linears in quantizable_linears(model, skip)]
        quantize_sequentially(model, layer_bits, _batches(windows, config), backend, linears, config.group_size)
    else:
        _quantize_round_to_nearest(model, layer_bits, backend, config.group_size, skip)
    config.layer_bits = layer_bits
    config.layer_scores = scores
    config.dynamic = backend.dynamic_overrides(layer_bits, config.bits[0], decoder_layers_path(model))
    config.level_settings, config.group_size_overrides = settings
    done = f"Quantized {len(layer_bits)} decoder layers to {average_bits(layer_bits):.2f} average bits"
    if reference is None:
        config.quality = None
        logger.warning(f"{done}; quality not measured: {_why_no_quality(config)}.")
        return
    quantized = score_windows(model, held_out, context, desc="Held-out check, quantized")
    check = QualityCheck(
        recorded_dataset_name(config.dataset),
        len(held_out),
        config.seq_len,
        reference.perplexity,
        quantized.perplexity,
    )
    config.quality = check.to_dict()
    logger.warning(f"{done}: {check.summary()}")


def _quantize_round_to_nearest(
    model: nn.Module, layer_bits: dict[int, int], backend: QuantizationBackend, group_size: int | None, skip: list[str]
) -> None:
    progress = logging.tqdm(total=len(layer_bits), desc=f"Quantizing layers ({backend.name})", unit="layer")
    with torch.no_grad():
        for index, layer, linears in quantizable_linears(model, skip):
            for name, linear in linears.items():
                layer_group_size = backend.layer_group_size(linear.in_features, group_size)
                set_submodule(layer, name, backend.quantize_linear(linear, layer_bits[index], layer_group_size))
            progress.update()
    progress.close()
