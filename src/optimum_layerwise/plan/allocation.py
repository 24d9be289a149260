"""From importance scores and a budget to a bit width per decoder layer (paper §3.2 and appendix A.2).

Pure functions; no torch, no transformers. Layer sizes are exact byte counts computed by the backend (packed weights,
scales and zero-points, plus what stays unquantized inside the layer), so a memory budget is met to the byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..utils.units import format_bytes, parse_memory
from .fields import BUDGET_NAMES, check_layer_costs
from .knapsack import cheapest_choice


def importance_order(scores: Sequence[float]) -> list[int]:
    """Layer indices from most to least important (higher score first; ties keep the lower index first)."""
    return sorted(range(len(scores)), key=lambda index: (-scores[index], index))


def check_levels(bits: Sequence[int]) -> tuple[int, ...]:
    """Check precision levels: two to four positive ints, strictly decreasing (high to low).

    Raises:
        `ValueError`: naming `bits` and what is allowed.
    """
    if not isinstance(bits, (list, tuple)) or not all(isinstance(b, int) and not isinstance(b, bool) for b in bits):
        raise ValueError(f"`bits` must be a tuple of ints such as (8, 4), got {bits!r}.")
    levels = tuple(bits)
    if not 2 <= len(levels) <= 4:
        raise ValueError(f"`bits` must give two to four precision levels, high to low, got {levels}.")
    if any(b <= 0 for b in levels) or any(high <= low for high, low in zip(levels, levels[1:])):
        raise ValueError(f"`bits` must be strictly decreasing positive integers (high to low), got {levels}.")
    return levels


def check_budget(
    levels: Sequence[int],
    *,
    target_bits: float | None = None,
    memory_budget: int | str | None = None,
    num_low_bit_layers: int | None = None,
    required: bool = True,
) -> None:
    """Check a budget: exactly one of [`BUDGET_NAMES`] (at most one when not `required`), each of the right type and
    within what `levels` allow.

    Raises:
        `ValueError`: naming the budget and what is allowed.
    """
    budgets = {"target_bits": target_bits, "memory_budget": memory_budget, "num_low_bit_layers": num_low_bit_layers}
    given = [name for name, value in budgets.items() if value is not None]
    if len(given) > 1 or (required and not given):
        raise ValueError(
            f"Give {'exactly' if required else 'at most'} one of {list(BUDGET_NAMES)}; got {given or 'none'}."
        )
    if target_bits is not None:
        if isinstance(target_bits, bool) or not isinstance(target_bits, (int, float)):
            raise ValueError(f"`target_bits` must be a number, got {target_bits!r}.")
        if not min(levels) <= target_bits <= max(levels):
            raise ValueError(
                f"`target_bits` must lie in [{min(levels)}, {max(levels)}] for bits={tuple(levels)}, "
                f"got {target_bits}."
            )
    if memory_budget is not None:
        parse_memory(memory_budget)
    if num_low_bit_layers is not None and (
        isinstance(num_low_bit_layers, bool) or not isinstance(num_low_bit_layers, int) or num_low_bit_layers < 0
    ):
        raise ValueError(f"`num_low_bit_layers` must be a non-negative int, got {num_low_bit_layers!r}.")


def _plan_bytes(plan: Mapping[int, int], layer_sizes: Sequence[Mapping[int, int]], fixed_bytes: int) -> int:
    return fixed_bytes + sum(layer_sizes[index][bits] for index, bits in plan.items())


def _ladder(order: list[int], levels: tuple[int, ...], fits) -> dict[int, int]:
    """Start with every layer at the lowest level, then raise layers one level at a time, most important first,
    filling one level for all layers before the next (keeps as many layers as possible off the lowest level)."""
    plan = dict.fromkeys(order, levels[-1])
    for level in reversed(levels[:-1]):
        for index in order:
            previous = plan[index]
            plan[index] = level
            if not fits(plan):
                plan[index] = previous
                return plan
    return plan


def _three_level_plan(order: list[int], levels: tuple[int, ...], num_low: int) -> dict[int, int]:
    high, middle, low = levels
    num_high = num_low // 2
    plan = dict.fromkeys(order, middle)
    for index in order[:num_high]:
        plan[index] = high
    for index in order[len(order) - num_low :]:
        plan[index] = low
    return plan


def allocate_bits(
    scores: Sequence[float],
    bits: Sequence[int],
    *,
    target_bits: float | None = None,
    memory_budget: int | str | None = None,
    num_low_bit_layers: int | None = None,
    layer_sizes: Sequence[Mapping[int, int]] | None = None,
    fixed_bytes: int = 0,
) -> dict[int, int]:
    """Choose a bit width per decoder layer: important layers high, the rest low, within one budget.

    Two levels `(high, low)` follow the paper's §3.2: the `N_high` most important layers get `high` bits, the rest
    `low`, where `N_high = ⌊(M_available − M_low) / (M_high − M_low) · N⌋`. With `memory_budget` the same rule is
    applied to exact byte counts: layers are raised to `high` in importance order while the whole model (decoder
    layers at their level + `fixed_bytes`) stays within the budget.

    Three or four levels, e.g. `(high, middle, low)`:
    - `num_low_bit_layers=2x` (three levels only) gives the paper's appendix A.2 shape: the `2x` least important layers
      at `low`, the `x` most important at `high`, the rest at `middle`.
    - `target_bits` / `memory_budget` fill the levels like a ladder: every layer starts at the lowest level, layers are
      raised one level in importance order while the budget allows, then again to the next level. This keeps as
      many layers as possible off the lowest level (the paper's A.2 found trading middle layers for high+low ones
      worse than staying uniform at the same average).

    Args:
        scores (`Sequence[float]`):
            Importance of each decoder layer, higher = more important.
        bits (`Sequence[int]`):
            Two to four precision levels, strictly decreasing, e.g. `(4, 2)`, `(8, 4, 2)` or `(8, 4, 3, 2)`.
        target_bits (`float`, *optional*):
            Average bits per decoder layer, within `[min(bits), max(bits)]`.
        memory_budget (`int` or `str`, *optional*):
            Bytes for the whole model (int, or a string like `"6GB"` / `"500MiB"`); needs `layer_sizes`.
        num_low_bit_layers (`int`, *optional*):
            Number of layers at the lowest level.
        layer_sizes (`Sequence[Mapping[int, int]]`, *optional*):
            For each decoder layer, its size in bytes at every level: `[{4: bytes, 2: bytes}, ...]`.
        fixed_bytes (`int`, *optional*, defaults to 0):
            Bytes of everything outside the decoder layers (embeddings, lm_head, final norm).

    Returns:
        `dict[int, int]`: `{layer_index: bits}` for every decoder layer.

    Raises:
        `ValueError`: for invalid levels, not exactly one budget, a budget outside what the levels can reach, or
        layer sizes that do not match the scores.
    """
    levels = check_levels(bits)
    num_layers = len(scores)
    if num_layers == 0:
        raise ValueError("`scores` is empty: the model has no decoder layer to allocate bits to.")
    check_budget(levels, target_bits=target_bits, memory_budget=memory_budget, num_low_bit_layers=num_low_bit_layers)
    order = importance_order(scores)

    if num_low_bit_layers is not None:
        if num_low_bit_layers > num_layers:
            raise ValueError(f"`num_low_bit_layers` must be in [0, {num_layers}], got {num_low_bit_layers}.")
        if len(levels) == 4:
            raise ValueError(
                "`num_low_bit_layers` takes two or three levels; give four with `target_bits` or `memory_budget`."
            )
        if len(levels) == 3:
            return dict(sorted(_three_level_plan(order, levels, num_low_bit_layers).items()))
        num_high = num_layers - num_low_bit_layers
        rank = {index: position for position, index in enumerate(order)}
        return {index: levels[0] if rank[index] < num_high else levels[-1] for index in range(num_layers)}

    _check_reachable(levels, num_layers, memory_budget, layer_sizes, fixed_bytes)
    budget = target_bits * num_layers + 1e-9 if target_bits is not None else parse_memory(memory_budget)

    def fits(plan: Mapping[int, int]) -> bool:
        used = sum(plan.values()) if target_bits is not None else _plan_bytes(plan, layer_sizes, fixed_bytes)
        return used <= budget

    return dict(sorted(_ladder(order, levels, fits).items()))


def _check_reachable(
    levels: tuple[int, ...],
    num_layers: int,
    memory_budget: int | str | None,
    layer_sizes: Sequence[Mapping[int, int]] | None,
    fixed_bytes: int,
) -> None:
    """Check that a `memory_budget` comes with a size for every layer and level, and that it fits the smallest model
    (a `target_bits` within the levels, checked by [`check_budget`], is always reachable)."""
    if memory_budget is None:
        return
    budget = parse_memory(memory_budget)
    if layer_sizes is None:
        raise ValueError("`memory_budget` needs `layer_sizes` (bytes of each decoder layer at every level).")
    if len(layer_sizes) != num_layers:
        raise ValueError(
            f"`layer_sizes` has {len(layer_sizes)} entries but the model has {num_layers} decoder layers."
        )
    for index, sizes in enumerate(layer_sizes):
        if any(level not in sizes for level in levels):
            raise ValueError(f"`layer_sizes[{index}]` must give bytes for every level {levels}, got {dict(sizes)}.")
    lowest = _plan_bytes(dict.fromkeys(range(num_layers), levels[-1]), layer_sizes, fixed_bytes)
    if budget < lowest:
        raise ValueError(
            f"`memory_budget`={budget} bytes is below the smallest model these levels allow: {lowest} bytes "
            f"({format_bytes(lowest)}) with every decoder layer at {levels[-1]} bits."
        )


def allocate_bits_by_cost(
    costs: Mapping[int, Mapping[int, float]],
    bits: Sequence[int],
    *,
    target_bits: float | None = None,
    memory_budget: int | str | None = None,
    num_low_bit_layers: int | None = None,
    layer_sizes: Sequence[Mapping[int, int]] | None = None,
    fixed_bytes: int = 0,
    num_weights: Sequence[int] | None = None,
) -> dict[int, int]:
    """Choose a bit width per decoder layer (or per block or module) that keeps the summed measured cost low within
    the budget.

    The cheapest bit map within the budget, exactly: the summed measured cost is minimised over every choice of one
    level per layer whose bytes (or bits, for `target_bits`) fit ([`~optimum_layerwise.knapsack.cheapest_choice`], a
    multiple-choice knapsack solved by dynamic programming), for any number of levels. `num_low_bit_layers` puts the
    layers with the smallest cost at the lowest level (three levels: the appendix A.2 shape, see [`allocate_bits`]).

    Args:
        costs (`Mapping[int, Mapping[int, float]]`):
            `{layer: {bits: cost}}` for every level, as measured by
            [`~optimum_layerwise.importance.sensitivity.measure_layer_costs`] (the top level costs 0).
        bits, target_bits, memory_budget, num_low_bit_layers, layer_sizes, fixed_bytes:
            As for [`allocate_bits`].
        num_weights (`Sequence[int]`, *optional*):
            Number of quantized weights of each item, when the items are blocks or modules of different sizes:
            `target_bits` is then the average over weights rather than over items.

    Returns:
        `dict[int, int]`: `{item_index: bits}`.
    """
    levels = check_levels(bits)
    num_layers = len(costs)
    if sorted(costs) != list(range(num_layers)):
        raise ValueError(f"`layer_costs` must cover layers 0..{num_layers - 1}, got {sorted(costs)}.")
    check_layer_costs(costs, levels)
    check_budget(levels, target_bits=target_bits, memory_budget=memory_budget, num_low_bit_layers=num_low_bit_layers)
    if num_low_bit_layers is not None:
        scores = [costs[index][levels[-1]] for index in range(num_layers)]
        return allocate_bits(scores, levels, num_low_bit_layers=num_low_bit_layers)
    _check_reachable(levels, num_layers, memory_budget, layer_sizes, fixed_bytes)
    if target_bits is not None:
        weights = [1] * num_layers if num_weights is None else list(num_weights)
        sizes = [{level: level * weight for level in levels} for weight in weights]
        capacity = target_bits * sum(weights) * (1 + 1e-12)
    else:
        sizes, capacity = [dict(layer_sizes[i]) for i in range(num_layers)], parse_memory(memory_budget) - fixed_bytes
    choice = cheapest_choice(sizes, [costs[index] for index in range(num_layers)], capacity)
    return dict(enumerate(choice))
