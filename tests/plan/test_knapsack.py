"""The allocation by measured cost is exact: checked against brute force on every small instance drawn."""

import itertools
import random

import pytest

from optimum_layerwise.plan.allocation import allocate_bits_by_cost
from optimum_layerwise.plan.knapsack import cheapest_choice


def brute_force(sizes, costs, capacity):
    best = None
    for combo in itertools.product(*[sorted(options) for options in sizes]):
        if sum(sizes[i][option] for i, option in enumerate(combo)) <= capacity:
            cost = sum(costs[i][option] for i, option in enumerate(combo))
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(200))
def test_cheapest_choice_matches_brute_force(seed):
    rng = random.Random(seed)
    levels = rng.sample([8, 4, 3, 2], rng.randint(2, 4))
    count = rng.randint(1, 6)
    sizes = [{level: level * 10 + rng.randint(0, 7) for level in levels} for _ in range(count)]
    costs = [{level: 0.0 if level == max(levels) else rng.random() for level in levels} for _ in range(count)]
    smallest, largest = (sum(f(s.values()) for s in sizes) for f in (min, max))
    capacity = rng.uniform(0.95 * smallest, largest)
    best, choice = brute_force(sizes, costs, capacity), cheapest_choice(sizes, costs, capacity)
    if best is None:
        assert choice is None
        return
    assert sum(sizes[i][option] for i, option in enumerate(choice)) <= capacity
    assert sum(costs[i][option] for i, option in enumerate(choice)) == pytest.approx(best, abs=1e-9)


def test_allocation_by_cost_beats_the_one_level_greedy_where_it_fails():
    """Two levels per step are not enough for a greedy: demoting layer 0 to 2 bits frees what two 4-bit layers need."""
    costs = {0: {8: 0.0, 4: 0.50, 2: 0.51}, 1: {8: 0.0, 4: 0.30, 2: 9.0}, 2: {8: 0.0, 4: 0.30, 2: 9.0}}
    plan = allocate_bits_by_cost(costs, (8, 4, 2), target_bits=14 / 3)
    assert plan == {0: 2, 1: 4, 2: 8} or plan == {0: 2, 1: 8, 2: 4}
    assert sum(costs[i][b] for i, b in plan.items()) == pytest.approx(0.81)


def test_four_levels_and_a_byte_budget_met_to_the_byte():
    costs = {i: {8: 0.0, 4: 0.1 * (i + 1), 3: 0.3 * (i + 1), 2: 1.0 * (i + 1)} for i in range(5)}
    sizes = [{8: 1000, 4: 530, 3: 410, 2: 290} for _ in range(5)]
    plan = allocate_bits_by_cost(costs, (8, 4, 3, 2), memory_budget=2600, layer_sizes=sizes, fixed_bytes=100)
    used = 100 + sum(sizes[i][b] for i, b in plan.items())
    assert used <= 2600
    best = brute_force(sizes, [costs[i] for i in range(5)], 2500)
    assert sum(costs[i][b] for i, b in plan.items()) == pytest.approx(best)
