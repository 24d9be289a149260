"""Per-layer slicing ratios from layer importance (DynamicSlicing's rule), and the widths they give.

A layer's redundancy is minus its importance (with `importance="lim"` it is the cosine similarity of the layer's
input and output, the paper's Layer Redundancy). Normalized to `r̂ ∈ [0, 1]` (min-max over the layers), the ratio
of layer `i` is

    c_i = base + (sparsity - base) * r̂_i / mean(r̂)

so that the ratios average to `sparsity`: the least redundant layer is sliced by `base`, the others more, in
proportion to their redundancy. `base = sparsity` is constant slicing (SliceGPT). Ratios are capped at
[`MAX_LAYER_RATIO`]; what a capped layer cannot take goes to the others, in the same proportions, so that the mean
stays `sparsity`.
"""

from __future__ import annotations

from collections.abc import Sequence


MAX_LAYER_RATIO = 0.9


def dynamic_ratios(scores: Sequence[float], sparsity: float, base: float) -> list[float]:
    """Slicing ratio of each layer from its importance score (higher = more important = sliced less).

    Args:
        scores (`Sequence[float]`):
            One importance score per decoder layer.
        sparsity (`float`):
            The mean ratio, in `[0, MAX_LAYER_RATIO]`.
        base (`float`):
            The ratio of the most important layer, in `[0, sparsity]`.

    Returns:
        `list[float]`: ratios in `[base, MAX_LAYER_RATIO]` whose mean is `sparsity` (all equal to it when the scores
        are).
    """
    if not 0 <= base <= sparsity <= MAX_LAYER_RATIO:
        raise ValueError(f"Need 0 <= base <= sparsity <= {MAX_LAYER_RATIO}, got base={base}, sparsity={sparsity}.")
    redundancy = [-score for score in scores]
    low, high = min(redundancy), max(redundancy)
    if high == low:
        return [float(sparsity)] * len(scores)
    share = [(value - low) / (high - low) for value in redundancy]
    capped: set[int] = set()
    while True:
        free = [i for i in range(len(share)) if i not in capped]
        # the free layers take what the capped ones do not: base plus a share in proportion to their redundancy
        left = sparsity * len(share) - MAX_LAYER_RATIO * len(capped) - base * len(free)
        weight = sum(share[i] for i in free)
        spread = [share[i] / weight if weight else 1 / len(free) for i in range(len(share))]
        ratios = [MAX_LAYER_RATIO if i in capped else base + left * spread[i] for i in range(len(share))]
        over = {i for i in free if ratios[i] > MAX_LAYER_RATIO}
        if not over:
            return ratios
        capped |= over


def layer_width(hidden_size: int, ratio: float, multiple: int) -> int:
    """Channels kept at slicing `ratio`: `(1 - ratio) * hidden_size` rounded to the nearest multiple of `multiple`
    (at least `multiple`, at most `hidden_size`)."""
    kept = round((1 - ratio) * hidden_size / multiple) * multiple
    return min(hidden_size, max(multiple, kept))
