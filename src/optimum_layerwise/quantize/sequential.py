"""Calibrated quantization (GPT-Q), one decoder layer after another; and the calibrated versions of every layer at
every level that cost measurements compare (see [`calibrated_versions`]).

The walk GPTQModel and optimum's `GPTQQuantizer` use ([`~optimum_layerwise.walk.walk_layers`]): for each layer, run
it on its inputs with hooks that feed every Linear's inputs to the backend's calibrator, quantize its Linear modules
at the layer's bits, and run the now quantized layer again to produce the inputs of the next one. Each layer is thus
calibrated on the outputs of the already quantized layers before it. Padding positions are left out of the
statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..data.calibration import CalibrationBatch
from ..model.layers import decoder_layers_path, linear_modules, set_submodule
from ..model.offload import PackedLayerStore
from ..model.walk import LayerCall, first_output, run_layer, walk_layers
from ..plan.quantization_plan import QuantizationPlan
from .backends import QuantizationBackend


def _feeding_hook(calibrator: Any, current: dict[str, torch.Tensor]):
    """A forward hook passing a Linear's inputs at the unpadded positions of the current batch to `calibrator`."""

    def hook(module, args, output):
        inputs = args[0]
        calibrator.add_batch(inputs[current["mask"].to(inputs.device)])

    return hook


def _run_feeding(
    layer: nn.Module,
    feeds: Sequence[tuple[nn.Linear, Any]],
    hidden: Sequence[torch.Tensor],
    calls: Sequence[LayerCall],
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
            outputs.append(first_output(layer(states, **call.kwargs)))
        return outputs
    finally:
        for handle in handles:
            handle.remove()


def quantize_sequentially(
    model: nn.Module,
    plan: QuantizationPlan,
    batches: Sequence[CalibrationBatch],
    backend: QuantizationBackend,
    skip: Sequence[str],
    store: PackedLayerStore | None = None,
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
        skip (`Sequence[str]`):
            Linear modules to leave in full precision. Each layer's Linears are looked up when the walk reaches it and
            dropped with it: a list of every layer's float Linears held for the whole walk kept each replaced
            layer's weights alive (read back from disk when offloaded) until the end.
        store ([`~optimum_layerwise.offload.PackedLayerStore`], *optional*):
            Where each layer's packed modules go once the layer is done (low-memory quantization); by default they
            stay in memory.
    """
    masks = [batch.attention_mask.bool() for batch in batches]
    path = decoder_layers_path(model)

    def step(index: int, layer: nn.Module, hidden: list[torch.Tensor], calls: list[LayerCall]) -> list[torch.Tensor]:
        linears = linear_modules(layer, skip, prefix=f"{path}.{index}")
        settings = plan.settings_of(index, linears)
        if store is not None and store.restore(index, layer, settings, backend):  # done by an interrupted run
            return run_layer(layer, hidden, calls)
        calibrators = {
            name: backend.calibrator(linear, module.bits, module.group_size)
            for name, (linear, module) in settings.items()
        }
        _run_feeding(layer, [(linears[n], c) for n, c in calibrators.items()], hidden, calls, masks)
        # each calibrator (its Hessian and working copies) is dropped as soon as its module is packed
        packed = {name: calibrators.pop(name).finish() for name in list(calibrators)}
        for name, module in packed.items():
            set_submodule(layer, name, module)
        outputs = run_layer(layer, hidden, calls)
        if store is not None:
            store.offload(index, layer, packed)
        return outputs

    walk_layers(model, batches, step, f"Quantizing layers ({backend.name})")


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

    Each layer runs once on its inputs with hooks that feed every Linear's inputs to one calibrator per level (on a
    copy of the Linear), and its outputs of that same run are the next layer's full-precision inputs. Cost: about one
    forward pass, plus one GPT-Q run per Linear and level.

    Returns:
        `dict[tuple[int, int], dict[str, nn.Module]]`: `{(layer, bits): {name: packed module}}`.
    """
    versions: dict[tuple[int, int], dict[str, nn.Module]] = {}
    masks = [batch.attention_mask.bool() for batch in batches]

    def step(index: int, layer: nn.Module, hidden: list[torch.Tensor], calls: list[LayerCall]) -> list[torch.Tensor]:
        outputs, by_level = calibrate_every_level(
            layer, linears_per_layer[index], hidden, calls, masks, levels, backend, group_size
        )
        versions.update({(index, bits): packed for bits, packed in by_level.items()})
        return outputs

    walk_layers(model, batches, step, f"Calibrating every level ({backend.name})")
    return versions


def calibrate_every_level(
    layer: nn.Module,
    linears: dict[str, nn.Linear],
    hidden: Sequence[torch.Tensor],
    calls: Sequence[LayerCall],
    masks: Sequence[torch.Tensor],
    levels: Sequence[int],
    backend: QuantizationBackend,
    group_size: int | None,
) -> tuple[list[torch.Tensor], dict[int, dict[str, nn.Module]]]:
    """Run `layer` once on its inputs while one calibrator per Linear and level (each on a copy of the Linear) reads
    the Linear's inputs; return the layer's (full-precision) outputs and `{bits: {name: packed module}}`."""
    calibrators = {
        (name, bits): backend.calibrator(
            _detached_copy(linear), bits, backend.module_plan(linear.in_features, bits, group_size).group_size
        )
        for name, linear in linears.items()
        for bits in levels
    }
    feeds = [(linears[name], calibrator) for (name, _), calibrator in calibrators.items()]
    outputs = _run_feeding(layer, feeds, hidden, calls, masks)
    by_level: dict[int, dict[str, nn.Module]] = {}
    for name, bits in list(calibrators):  # each calibrator dropped as soon as its module is packed
        by_level.setdefault(bits, {})[name] = calibrators.pop((name, bits)).finish()
    return outputs, by_level


def _detached_copy(linear: nn.Linear) -> nn.Linear:
    """A plain `nn.Linear` with copies of `linear`'s tensors (none of its hooks), for a calibrator to change."""
    twin = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    twin.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
    if linear.bias is not None:
        twin.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    return twin
