"""The exact multiple-choice knapsack behind allocation by measured cost.

Each item (a decoder layer) takes exactly one of its options (a bit width), each with a size (bytes, or bits for an
average-bits budget) and a cost (the measured error at that width); the cheapest choice whose sizes sum to at most
the capacity is found exactly by dynamic programming over the Pareto front of (size, cost) partial solutions.

Pure Python; no torch, no transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


_TIE = 1e-12  # costs closer than this count as equal


def cheapest_choice(
    sizes: Sequence[Mapping[int, float]], costs: Sequence[Mapping[int, float]], capacity: float
) -> list[int] | None:
    """The option of every item that minimises the summed cost with summed size at most `capacity`.

    Exact: partial solutions over the first items are kept as a Pareto front (no kept solution is both larger and
    costlier than another), pruned by what the remaining items need at least (size) and by the cost of the best
    complete solution known so far. With many items of equal size the front stays small (its sizes are sums of few
    distinct values); items of many different sizes make it larger, never the answer worse. Among equally cheap
    solutions the smaller one is returned.

    Args:
        sizes (`Sequence[Mapping[int, float]]`):
            For each item, the size of each option: `[{8: 1000, 4: 520}, ...]`.
        costs (`Sequence[Mapping[int, float]]`):
            For each item, the cost of each option (same keys as `sizes`).
        capacity (`float`):
            Largest allowed summed size.

    Returns:
        `list[int]` or `None`: the chosen option of each item, or `None` when even the smallest options exceed
        `capacity`.
    """
    count = len(sizes)
    if len(costs) != count or any(set(sizes[i]) != set(costs[i]) or not sizes[i] for i in range(count)):
        raise ValueError("`sizes` and `costs` must give the same, non-empty options for every item.")
    least_size_after = [0.0] * (count + 1)
    least_cost_after = [0.0] * (count + 1)
    for i in reversed(range(count)):
        least_size_after[i] = least_size_after[i + 1] + min(sizes[i].values())
        least_cost_after[i] = least_cost_after[i + 1] + min(costs[i].values())
    if least_size_after[0] > capacity:
        return None
    best = _cheapest_option_first(sizes, costs, capacity)
    # front: (size, cost, choices so far as a linked list (option, previous))
    front: list[tuple[float, float, tuple | None]] = [(0.0, 0.0, None)]
    for i in range(count):
        grown = []
        for size, cost, chain in front:
            for option, option_size in sizes[i].items():
                total_size, total_cost = size + option_size, cost + costs[i][option]
                if total_size + least_size_after[i + 1] > capacity:
                    continue
                if total_cost + least_cost_after[i + 1] > best + _TIE:
                    continue
                grown.append((total_size, total_cost, (option, chain)))
        front = _pareto(grown)
    size, cost, chain = min(front, key=lambda state: (state[1], state[0]))
    choice = []
    while chain is not None:
        option, chain = chain
        choice.append(option)
    return choice[::-1]


def _pareto(states: list[tuple[float, float, tuple | None]]) -> list[tuple[float, float, tuple | None]]:
    """The states no other state beats on both size and cost (smaller size first, then lower cost)."""
    states.sort(key=lambda state: (state[0], state[1]))
    kept: list[tuple[float, float, tuple | None]] = []
    for state in states:
        if not kept or state[1] < kept[-1][1] - _TIE:
            kept.append(state)
    return kept


def _cheapest_option_first(
    sizes: Sequence[Mapping[int, float]], costs: Sequence[Mapping[int, float]], capacity: float
) -> float:
    """The cost of a feasible solution found greedily (an upper bound that prunes the exact search): start from the
    smallest option of every item, then repeatedly take the upgrade with the largest cost saving per added size
    that still fits."""
    choice = [min(options, key=lambda option: (options[option], costs[i][option])) for i, options in enumerate(sizes)]
    used = sum(sizes[i][option] for i, option in enumerate(choice))
    while True:
        upgrades = []
        for i, option in enumerate(choice):
            for better, better_size in sizes[i].items():
                saving = costs[i][option] - costs[i][better]
                extra = better_size - sizes[i][option]
                if saving > _TIE and used + extra <= capacity:
                    upgrades.append((-saving / max(extra, 1e-12), i, better, extra))
        if not upgrades:
            return sum(costs[i][option] for i, option in enumerate(choice))
        _, i, better, extra = min(upgrades)
        choice[i], used = better, used + extra
