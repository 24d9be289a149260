"""From a model and a request to a [`~optimum_layerwise.plan.QuantizationPlan`]: sizes, scores, allocation.

Nothing here changes the model or the request: the model's layers are measured (and, for the sensitivity methods,
quantized one at a time and put back), and the result is a new plan value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn
from transformers.utils import logging

from ..data.calibration import CalibrationBatch
from ..importance import IMPORTANCE_METHODS, measure_layer_costs, measure_unit_costs, score_layers
from ..importance.sensitivity import costs_to_scores
from ..model.footprint import tensor_nbytes
from ..model.layers import allocation_units, decoder_layers, decoder_layers_path, linear_shapes, quantizable_linears
from ..plan.allocation import allocate_bits, allocate_bits_by_cost
from ..plan.fields import check_layer_bits
from ..plan.quantization_plan import QuantizationPlan
from ..plan.request import QuantizationRequest
from ..quantize.backends import QuantizationBackend
from ..quantize.backends.base import resolve_modules
from ..utils.units import parse_memory


logger = logging.get_logger(__name__)


def layer_sizes(
    model: nn.Module,
    levels: Sequence[int],
    backend: QuantizationBackend,
    group_size: int | None,
    skip: Sequence[str],
) -> tuple[list[dict[int, int]], int]:
    """Exact bytes of every decoder layer at every level, and the bytes outside the decoder layers.

    Returns:
        `tuple[list[dict[int, int]], int]`: `([{bits: bytes}, ...], fixed_bytes)`.
    """
    sizes = []
    for _, layer, linears in quantizable_linears(model, skip):
        weights = sum(linear.weight.numel() * linear.weight.element_size() for linear in linears.values())
        rest = tensor_nbytes(layer) - weights
        sizes.append({bits: rest + _packed_nbytes(linears.values(), bits, backend, group_size) for bits in levels})
    fixed = tensor_nbytes(model) - tensor_nbytes(decoder_layers(model))
    return sizes, fixed


def _packed_nbytes(
    linears: Iterable[nn.Linear], bits: int, backend: QuantizationBackend, group_size: int | None
) -> int:
    return sum(
        backend.packed_nbytes(linear.out_features, linear.in_features, bits, group_size, linear.weight.dtype)
        for linear in linears
    )


def _unit_plan(
    model: nn.Module,
    request: QuantizationRequest,
    backend: QuantizationBackend,
    skip: Sequence[str],
    batches: Sequence[CalibrationBatch],
    budget: dict,
) -> QuantizationPlan:
    """The plan at `"block"` or `"module"` granularity: the cost of every unit at every level is measured, and the
    cheapest choice of one level per unit within the budget is found exactly."""
    path = decoder_layers_path(model)
    units = allocation_units(model, skip, request.granularity)
    linears = [[model.get_submodule(f"{path}.{unit.layer}.{name}") for name in unit.members] for unit in units]
    num_weights = [sum(linear.weight.numel() for linear in members) for members in linears]
    sizes = [
        {bits: _packed_nbytes(members, bits, backend, request.group_size) for bits in request.bits}
        for members in linears
    ]
    unquantized = sum(
        linear.weight.numel() * linear.weight.element_size() for members in linears for linear in members
    )
    costs = request.unit_costs or measure_unit_costs(
        model,
        batches,
        request.bits,
        granularity=request.granularity,
        measure=IMPORTANCE_METHODS[request.importance].measure,
        backend=backend,
        group_size=request.group_size,
        skip=skip,
        calibrated=request.calibrated_costs,
    )
    if set(costs) != {unit.name for unit in units}:
        raise ValueError(
            f"`unit_costs` names {len(costs)} units but the model has {len(units)} at granularity="
            f"{request.granularity!r} (e.g. {units[0].name!r}): measure them on this model."
        )
    choice = allocate_bits_by_cost(
        {position: costs[unit.name] for position, unit in enumerate(units)},
        request.bits,
        **budget,
        layer_sizes=sizes,
        fixed_bytes=tensor_nbytes(model) - unquantized,
        num_weights=num_weights,
    )
    modules, weighted_bits, layer_weights, scores = {}, {}, {}, {}
    for position, (unit, members) in enumerate(zip(units, linears)):
        bits = choice[position]
        for name, linear in zip(unit.members, members):
            modules[f"{path}.{unit.layer}.{name}"] = backend.module_plan(linear.in_features, bits, request.group_size)
        weighted_bits[unit.layer] = weighted_bits.get(unit.layer, 0) + bits * num_weights[position]
        layer_weights[unit.layer] = layer_weights.get(unit.layer, 0) + num_weights[position]
        scores[unit.layer] = scores.get(unit.layer, 0.0) + max(costs[unit.name].values())
    return QuantizationPlan(
        layers_path=path,
        layer_bits={index: weighted_bits[index] / layer_weights[index] for index in sorted(weighted_bits)},
        modules=modules,
        layer_scores=[scores[index] for index in sorted(scores)],
        budget=budget,
        granularity=request.granularity,
        unit_costs=costs,
    )


def _allocate(
    model: nn.Module,
    request: QuantizationRequest,
    backend: QuantizationBackend,
    skip: Sequence[str],
    batches: Sequence[CalibrationBatch],
    budget: dict,
) -> tuple[dict[int, int], list[float], dict | None]:
    """Scores and bit map under `budget`; costs too when bits are allocated by measured cost."""
    sizes, fixed = layer_sizes(model, request.bits, backend, request.group_size, skip)
    if "memory_budget" in budget:
        largest = fixed + sum(size[max(request.bits)] for size in sizes)
        if parse_memory(budget["memory_budget"]) >= largest:
            logger.warning(f"memory_budget={budget['memory_budget']} fits every layer at {max(request.bits)} bits.")
    allocation = {**budget, "layer_sizes": sizes, "fixed_bytes": fixed}
    method = IMPORTANCE_METHODS.get(request.importance) if isinstance(request.importance, str) else None
    costs = request.layer_costs
    if costs is None and method is not None and method.measure is not None:
        costs = measure_layer_costs(
            model,
            batches,
            request.bits,
            measure=method.measure,
            backend=backend,
            group_size=request.group_size,
            skip=skip,
            calibrated=request.calibrated_costs,
        )
    if costs is not None:
        if len(costs) != len(sizes):
            raise ValueError(
                f"`layer_costs` covers {len(costs)} layers but the model has {len(sizes)} decoder layers."
            )
        return allocate_bits_by_cost(costs, request.bits, **allocation), costs_to_scores(costs), costs
    scores = score_layers(
        model,
        request.importance,
        batches,
        seed=request.seed,
        skip=skip,
        bits=request.bits,
        backend=request.backend,
        group_size=request.group_size,
    )
    return allocate_bits(scores, request.bits, **allocation), scores, None


def _budget(request: QuantizationRequest) -> dict:
    budget = request.budget()
    if budget != request.requested_budget():
        name, value = next(iter(budget.items()))
        logger.info(f"No budget given: using {name}={value} (mean of the highest and lowest level).")
    return budget


def make_plan(
    model: nn.Module,
    request: QuantizationRequest,
    backend: QuantizationBackend,
    skip: Sequence[str],
    batches: Sequence[CalibrationBatch] = (),
) -> QuantizationPlan:
    """The plan for quantizing `model` as `request` asks: its explicit `layer_bits`, or scores and an allocation
    within its budget (see [`QuantizationRequest.budget`]).

    Args:
        model (`PreTrainedModel`):
            The full-precision model.
        request ([`QuantizationRequest`]):
            The request; not modified.
        backend ([`~optimum_layerwise.backends.QuantizationBackend`]):
            The backend that will pack the modules.
        skip (`Sequence[str]`):
            Linear modules kept in full precision.
        batches (`Sequence[CalibrationBatch]`, *optional*):
            Calibration batches for the data-driven importance methods (shared with GPT-Q's calibration).
    """
    num_layers = len(decoder_layers(model))
    if request.granularity != "layer":
        return _unit_plan(model, request, backend, skip, batches, _budget(request))
    if request.layer_bits is not None:
        check_layer_bits(request.layer_bits, num_layers, request.bits)
        layer_bits, scores, costs, budget = dict(request.layer_bits), None, None, {}
    else:
        budget = _budget(request)
        layer_bits, scores, costs = _allocate(model, request, backend, skip, batches, budget)
    return QuantizationPlan(
        layers_path=decoder_layers_path(model),
        layer_bits=layer_bits,
        modules=resolve_modules(linear_shapes(model, skip), layer_bits, backend, request.group_size),
        layer_scores=scores,
        layer_costs=costs,
        budget=budget,
    )
