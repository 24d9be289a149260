"""Time the exact allocation solver (`optimum_layerwise.plan.knapsack.cheapest_choice`) on instances of model size.

    python docs/results/measure_knapsack_speed.py

Prints the seconds for 80 decoder layers of equal size at 4 levels (a 70B-class depth, GPT-Q's 8/4/3/2) and for 168
items of 7 different sizes at 4 levels (per-module allocation of a 24-layer model), with random costs.
"""

import random
import time

from optimum_layerwise.plan.knapsack import cheapest_choice


def timed(sizes, costs, capacity) -> float:
    start = time.perf_counter()
    cheapest_choice(sizes, costs, capacity)
    return time.perf_counter() - start


def random_costs(rng: random.Random, count: int) -> list[dict[int, float]]:
    return [{8: 0.0, 4: 0.1 * rng.random(), 3: 0.1 + 0.3 * rng.random(), 2: 0.5 + rng.random()} for _ in range(count)]


if __name__ == "__main__":
    rng = random.Random(0)
    layers = [{8: 800, 4: 420, 3: 320, 2: 220} for _ in range(80)]
    print(f"80 layers x 4 levels: {timed(layers, random_costs(rng, 80), 80 * 450):.3f} s")
    modules = [{bits: bits * 100 * (1 + i % 7) + 13 * (i % 7) for bits in (8, 4, 3, 2)} for i in range(168)]
    capacity = sum(sizes[4] for sizes in modules)
    print(f"168 modules of 7 sizes x 4 levels: {timed(modules, random_costs(rng, 168), capacity):.3f} s")
