"""The importance heatmap of the paper's Figure 1, shown in model cards and by `optimum-layerwise score`.

matplotlib is an optional dependency: `pip install optimum-layerwise[plots]`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ..utils.units import format_bits


def pyplot():
    """matplotlib's pyplot with the file-only Agg backend, or an `ImportError` naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("Plotting needs matplotlib: `pip install 'optimum-layerwise[plots]'`.") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_importance(
    scores: Sequence[float],
    path: str | os.PathLike,
    *,
    layer_bits: Mapping[int, int] | None = None,
    title: str = "Layer importance",
) -> None:
    """Heatmap of layer importance like the paper's Figure 1: layers in model order (top row) and sorted from most
    to least important (bottom row), coloured by score (green = important, red = not).

    Args:
        scores (`Sequence[float]`):
            One score per decoder layer, higher = more important.
        path (`str` or `os.PathLike`):
            Where to write the PNG.
        layer_bits (`Mapping[int, int]`, *optional*):
            When given, each cell is annotated with the layer's bit width.
        title (`str`, *optional*):
            Figure title.
    """
    plt = pyplot()
    import numpy as np

    values = np.asarray(scores, dtype=float)
    order = np.argsort(-values, kind="stable")
    figure, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.32 * len(values) + 1.5), 2.6), constrained_layout=True)
    for axis, indices, label in ((axes[0], np.arange(len(values)), "model order"), (axes[1], order, "sorted")):
        image = axis.imshow(
            values[indices][None, :], cmap="RdYlGn", aspect="auto", vmin=values.min(), vmax=values.max()
        )
        axis.set_yticks([0], [label])
        axis.set_xticks(range(len(values)), [str(i) for i in indices], fontsize=7)
        if layer_bits is not None:
            for column, index in enumerate(indices):
                axis.text(column, 0, format_bits(layer_bits[int(index)]), ha="center", va="center", fontsize=7)
    axes[0].set_title(title)
    figure.colorbar(image, ax=axes, shrink=0.8, label="score")
    figure.savefig(path, dpi=120)
    plt.close(figure)
