"""Sweep figures like the paper's Figure 2 (matplotlib is optional: `pip install optimum-layerwise[plots]`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ..formats.heatmap import pyplot
from .summary import summarize


def plot_sweep(
    rows: Sequence[Mapping], path: str | os.PathLike, *, metric: str = "perplexity", title: str = "", log_scale=True
) -> None:
    """Quality against average bits like the paper's Figure 2: one curve per ordering (random: mean ± std over seeds)
    and references as horizontal lines; when the sweep has a pruning comparison, a second panel shows the orderings'
    quantized curves against pruning to the same memory (dashed).

    Args:
        rows (`Sequence[Mapping]`):
            Rows of [`~optimum_layerwise.evaluation.sweep.run_sweep`].
        path (`str` or `os.PathLike`):
            Where to write the PNG.
        metric (`str`, *optional*, defaults to `"perplexity"`):
            Row key on the y axis (e.g. `"piqa/acc_norm"`).
        title (`str`, *optional*):
            Figure title.
        log_scale (`bool`, *optional*, defaults to `True`):
            Logarithmic y axis (perplexity spans orders of magnitude at 2 bits).
    """
    plt = pyplot()
    pruned = [row for row in rows if row["kind"] == "pruned"]
    figure, axes = plt.subplots(
        1, 2 if pruned else 1, figsize=(13 if pruned else 7.5, 4.8), constrained_layout=True, squeeze=False
    )
    summary = summarize(rows, metric)
    for axis in axes[0]:
        for curve in sorted({row["ordering"] for row in summary}):
            points = [row for row in summary if row["ordering"] == curve]
            x = [row["avg_bits"] for row in points]
            mean = [row["mean"] for row in points]
            label = curve if points[0]["runs"] == 1 else f"{curve} (mean ± std, {points[0]['runs']} seeds)"
            (line,) = axis.plot(x, mean, marker="o", markersize=3, label=label)
            if points[0]["runs"] > 1:
                low = [row["mean"] - row["std"] for row in points]
                high = [row["mean"] + row["std"] for row in points]
                axis.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
        for row in rows:
            if row["kind"] == "reference" and row.get(metric) is not None:
                axis.axhline(row[metric], linestyle=":", color="gray")
                axis.text(0.01, row[metric], row["ordering"], transform=axis.get_yaxis_transform(), fontsize=7)
        axis.set_xlabel("average bits per decoder layer")
        axis.set_ylabel(metric)
        if log_scale:
            axis.set_yscale("log")
        axis.invert_xaxis()
    axes[0][0].set_title(title)
    axes[0][0].legend(fontsize=7)
    if pruned:
        axis = axes[0][1]
        for curve in sorted({row["ordering"] for row in pruned}):
            points = sorted((row["avg_bits"], row[metric]) for row in pruned if row["ordering"] == curve)
            axis.plot(*zip(*points), linestyle="--", marker="x", markersize=4, label=f"{curve} (same memory)")
        axis.set_title("quantizing vs removing layers at equal memory")
        axis.legend(fontsize=7)
    figure.savefig(path, dpi=120)
    plt.close(figure)
