"""Orderings that need neither data nor weights: the paper's baselines."""

from __future__ import annotations

import torch


def random_scores(num_layers: int, seed: int) -> list[float]:
    """A random order of the layers, reproducible from `seed` (a random permutation as scores)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_layers, generator=generator).double().tolist()


def depth_scores(num_layers: int) -> list[float]:
    """Gromov et al.'s drop-from-the-top order: the last layer is kept most important, then layer 0, 1, ..., so the
    layers just below the last one are the least important."""
    scores = [float(num_layers - 1 - index) for index in range(num_layers)]
    scores[-1] = float(num_layers)
    return scores
