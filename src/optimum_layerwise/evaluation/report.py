"""Markdown tables from saved sweeps (`sweep.json`), as quoted in docs/results.md: perplexity per ordering and point,
then one table per recorded lm-eval accuracy; for several folders, how often each ordering is best and worst.

python -m optimum_layerwise.evaluation.report docs/results/smollm2-8to4-g128 [more sweep folders ...]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .summary import summarize


def retention_limit(points: list[dict[str, Any]], retention: float = 0.9) -> float | None:
    """The lowest average bits an ordering reaches before its perplexity rises above `all-high / retention` (i.e. it
    loses more than `1 − retention` of the all-high quality, measured as the perplexity ratio)."""
    ordered = sorted(points, key=lambda point: point["layers_low"])
    ceiling = ordered[0]["mean"] / retention
    reached = None
    for point in ordered:
        if point["mean"] > ceiling:
            break
        reached = point["avg_bits"]
    return reached


def _ordering_lines(rows: list[dict[str, Any]], metric: str, digits: int, limit_column: bool) -> list[str]:
    """Header and one line per ordering of `metric` (columns: layers at the low level / average bits; random as
    mean ± std), optionally with the 90 %-retention limit of the perplexity."""
    summary = summarize(rows, metric)
    columns = sorted({(point["layers_low"], point["avg_bits"]) for point in summary})
    orderings = sorted({point["ordering"] for point in summary}, key=lambda name: (name == "random", name))
    header = "| ordering | " + " | ".join(f"{low} low ({bits:.2f} b)" for low, bits in columns) + " |"
    header += " ≥90% kept down to |" if limit_column else ""
    lines = [header, "|" + "---|" * (len(columns) + 1 + limit_column)]
    for ordering in orderings:
        points = {point["layers_low"]: point for point in summary if point["ordering"] == ordering}
        cells = []
        for low, _ in columns:
            point = points.get(low)
            if point is None:
                cells.append("")
            elif point["runs"] > 1:
                cells.append(f"{point['mean']:.{digits}f} ± {point['std']:.{digits}f}")
            else:
                cells.append(f"{point['mean']:.{digits}f}")
        runs = points[columns[0][0]]["runs"]
        label = ordering if runs == 1 else f"{ordering} ({runs} seeds)"
        limit = f" {retention_limit(list(points.values())):.2f} bits |" if limit_column else ""
        lines.append(f"| {label} | " + " | ".join(cells) + " |" + limit)
    return lines


def _reference_lines(rows: list[dict[str, Any]], metric: str, digits: int) -> list[str]:
    """A blank line and `metric` of the reference models (unquantized, all-8), or nothing if none was measured."""
    references = [row for row in rows if row["kind"] == "reference" and metric in row]
    if not references:
        return []
    return ["", "References: " + ", ".join(f"{row['ordering']} {row[metric]:.{digits}f}" for row in references) + "."]


def task_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The lm-eval metrics recorded at the sweep points (`"<task>/acc"`, `"<task>/acc_norm"`), in recorded order."""
    names: dict[str, None] = {}
    for row in rows:
        if row["kind"] == "quantized":
            names.update(dict.fromkeys(key for key in row if key.endswith(("/acc", "/acc_norm"))))
    return list(names)


def task_table(rows: list[dict[str, Any]], metric: str) -> str:
    """Accuracy `metric` (e.g. `"piqa/acc"`) per ordering and point, with the references' values below."""
    lines = [f"{metric}:", "", *_ordering_lines(rows, metric, 3, limit_column=False)]
    return "\n".join(lines + _reference_lines(rows, metric, 3))


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """Perplexity per ordering (columns: layers at the low level / average bits; random as mean ± std), followed by
    the 90 %-retention limit and the references."""
    lines = _ordering_lines(rows, "perplexity", 1, limit_column=True) + _reference_lines(rows, "perplexity", 1)
    pruned = [row for row in rows if row["kind"] == "pruned"]
    if pruned:
        lines.append("")
        lines.append("| pruning (same memory as) | " + " | ".join(sorted({r["ordering"] for r in pruned})) + " |")
        lines.append("|---|" + "---|" * len({r["ordering"] for r in pruned}))
        for low in sorted({r["equivalent_layers_low"] for r in pruned}):
            cells = []
            for ordering in sorted({r["ordering"] for r in pruned}):
                match = [r for r in pruned if r["ordering"] == ordering and r["equivalent_layers_low"] == low]
                cells.append(f"{match[0]['perplexity']:.1f} ({match[0]['layers_removed']} removed)" if match else "")
            lines.append(f"| {low} layers low | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rank_table(sweeps: list[list[dict[str, Any]]]) -> str:
    """How often each ordering has the lowest, the second lowest and the highest perplexity (random: its mean) over
    the intermediate points of several sweeps (the end points, where every ordering agrees, are left out)."""
    best: Counter[str] = Counter()
    second: Counter[str] = Counter()
    worst: Counter[str] = Counter()
    points = 0
    for rows in sweeps:
        summary = summarize(rows)
        lows = sorted({point["layers_low"] for point in summary})
        for low in lows[1:-1]:
            ranked = sorted((point for point in summary if point["layers_low"] == low), key=lambda p: p["mean"])
            best[ranked[0]["ordering"]] += 1
            second[ranked[1]["ordering"]] += 1
            worst[ranked[-1]["ordering"]] += 1
            points += 1
    orderings = sorted(set(best) | set(second) | set(worst), key=lambda name: (-best[name], -second[name], name))
    lines = [f"Over {points} intermediate points:", "", "| ordering | best | second | worst |", "|---|---|---|---|"]
    lines += [f"| {name} | {best[name]} | {second[name]} | {worst[name]} |" for name in orderings]
    return "\n".join(lines)


def main(folders: list[str]) -> None:
    sweeps = []
    for folder in folders:
        rows = json.loads((Path(folder) / "sweep.json").read_text())
        sweeps.append(rows)
        print(f"### {Path(folder).name}\n\n{sweep_table(rows)}\n")
        for metric in task_metrics(rows):
            print(f"{task_table(rows, metric)}\n")
    if len(sweeps) > 1:
        print(f"### Orderings ranked over all {len(sweeps)} sweeps\n\n{rank_table(sweeps)}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
