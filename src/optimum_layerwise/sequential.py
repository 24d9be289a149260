"""Calibrated quantization (GPT-Q), one decoder layer after another; and the calibrated versions of every layer at
every level that cost measurements compare (see [`calibrated_versions`]).

The walk GPTQModel and optimum's `GPTQQuantizer` use: one forward pass of the full-precision model records the inputs
of the first decoder layer and the keyword arguments of every layer (attention masks and position embeddings, which
differ per layer on models that mix sliding and full attention). Then, for each layer: run it on its inputs with
hooks that feed every Linear's inputs to the backend's calibrator, quantize its Linear modules at the layer's bits,
and run the now quantized layer again to produce the inputs of the next one. Each layer is thus calibrated on the
outputs of the already quantized layers before it. Padding positions are left out of the statistics.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from .backends import QuantizationBackend
from .calibration import CalibrationBatch
from .layers import decoder_layers, set_submodule
from .plan import QuantizationPlan


@dataclass
class _LayerCall:
    """The inputs of one decoder layer for one calibration batch."""

    hidden_states: torch.Tensor | None
    kwargs: dict[str, Any]


def _record_layer_calls(model: nn.Module, batches: Sequence[CalibrationBatch]) -> list[list[_LayerCall]]:
    """`calls[layer][batch]`: the first layer's hidden states and every layer's keyword arguments, from one pass."""
    layers = decoder_layers(model)
    calls: list[list[_LayerCall]] = [[] for _ in layers]

    def hook_for(index: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            rest = {key: value for key, value in kwargs.items() if key != "hidden_states"}
            calls[index].append(_LayerCall(hidden if index == 0 else None, rest))

        return hook

    handles = [layer.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i, layer in enumerate(layers)]
    device = model.get_input_embeddings().weight.device
    runner = model.base_model if hasattr(model, "base_model") else model
    try:
        for batch in logging.tqdm(batches, desc="Recording layer inputs", unit="batch"):
            input_ids, attention_mask = batch.input_ids.to(device), batch.attention_mask.to(device)
            runner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _feeding_hook(calibrator: Any, current: dict[str, torch.Tensor]):
    """A forward hook passing a Linear's inputs at the unpadded positions of the current batch to `calibrator`."""

    def hook(module, args, output):
        inputs = args[0]
        calibrator.add_batch(inputs[current["mask"].to(inputs.device)])

    return hook


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _run_feeding(
    layer: nn.Module,
    feeds: Sequence[tuple[nn.Linear, Any]],
    hidden: Sequence[torch.Tensor],
    calls: Sequence[_LayerCall],
    masks: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """Run `layer` on its recorded inputs while each `(linear, calibrator)` of `feeds` receives the Linear's inputs
    at the unpadded positions; return the layer's outputs."""
    current: dict[str, torch.Tensor] = {}
    handles = [linear.register_forward_hook(_feeding_hook(calibrator, current)) for linear, calibrator in feeds]
    try:
        outputs = []
        for states, call, mask in zip(hidden, calls, masks):
            current["mask"] = mask
            outputs.append(_first(layer(states, **call.kwargs)))
        return outputs
    finally:
        for handle in handles:
            handle.remove()


def quantize_sequentially(
    model: nn.Module,
    plan: QuantizationPlan,
    batches: Sequence[CalibrationBatch],
    backend: QuantizationBackend,
    linears_per_layer: Sequence[dict[str, nn.Linear]],
) -> None:
    """Quantize every decoder layer's Linear modules in place with a calibrated backend (GPT-Q).

    Args:
        model (`PreTrainedModel`):
            The full-precision model.
        plan ([`~optimum_layerwise.plan.QuantizationPlan`]):
            The settings of every Linear module.
        batches (`Sequence[CalibrationBatch]`):
            Calibration batches.
        backend ([`~optimum_layerwise.backends.QuantizationBackend`]):
            A backend with `requires_calibration`.
        linears_per_layer (`Sequence[dict[str, nn.Linear]]`):
            For each decoder layer, the Linear modules to quantize by name inside the layer.
    """
    layers = decoder_layers(model)
    with torch.no_grad():
        calls = _record_layer_calls(model, batches)
        hidden = [call.hidden_states for call in calls[0]]
        masks = [batch.attention_mask.bool() for batch in batches]
        for index in logging.tqdm(range(len(layers)), desc=f"Quantizing layers ({backend.name})", unit="layer"):
            layer, linears = layers[index], linears_per_layer[index]
            settings = {name: plan.modules[f"{plan.layers_path}.{index}.{name}"] for name in linears}
            calibrators = {
                name: backend.calibrator(linear, settings[name].bits, settings[name].group_size)
                for name, linear in linears.items()
            }
            _run_feeding(layer, [(linears[n], c) for n, c in calibrators.items()], hidden, calls[index], masks)
            for name, calibrator in calibrators.items():
                set_submodule(layer, name, calibrator.finish())
            calibrators.clear()
            hidden = [_first(layer(states, **call.kwargs)) for states, call in zip(hidden, calls[index])]
            calls[index] = []


def calibrated_versions(
    model: nn.Module,
    batches: Sequence[CalibrationBatch],
    levels: Sequence[int],
    backend: QuantizationBackend,
    group_size: int | None,
    linears_per_layer: Sequence[dict[str, nn.Linear]],
) -> dict[tuple[int, int], dict[str, nn.Module]]:
    """Every decoder layer's Linear modules quantized by a calibrated backend at each of `levels`, each layer
    calibrated on its full-precision inputs (the model is not changed), for measuring what quantizing one layer, block
    or module alone costs with the quantizer that will be used.

    One forward pass records the first layer's inputs; then each layer runs once on them with hooks that feed every
    Linear's inputs to one calibrator per level (on a copy of the Linear), and its outputs of that same run are the
    next layer's full-precision inputs. Cost: about two forward passes, plus one GPT-Q run per Linear and level.

    Returns:
        `dict[tuple[int, int], dict[str, nn.Module]]`: `{(layer, bits): {name: packed module}}`.
    """
    layers = decoder_layers(model)
    versions: dict[tuple[int, int], dict[str, nn.Module]] = {}
    with torch.no_grad():
        calls = _record_layer_calls(model, batches)
        hidden = [call.hidden_states for call in calls[0]]
        masks = [batch.attention_mask.bool() for batch in batches]
        for index in logging.tqdm(range(len(layers)), desc=f"Calibrating every level ({backend.name})", unit="layer"):
            layer, linears = layers[index], linears_per_layer[index]
            calibrators = {
                (name, bits): backend.calibrator(
                    copy.deepcopy(linear), bits, backend.module_plan(linear.in_features, bits, group_size).group_size
                )
                for name, linear in linears.items()
                for bits in levels
            }
            feeds = [(linears[name], calibrator) for (name, _), calibrator in calibrators.items()]
            outputs = _run_feeding(layer, feeds, hidden, calls[index], masks)
            for (name, bits), calibrator in calibrators.items():
                versions.setdefault((index, bits), {})[name] = calibrator.finish()
            hidden, calls[index] = outputs, []
    return versions
