"""Tables from sweep rows: mean and spread per ordering and point, and the paper's Table 4 memory table."""

from __future__ import annotations

import statistics
from typing import Any


def summarize(rows: list[dict[str, Any]], metric: str = "perplexity") -> list[dict[str, Any]]:
    """Mean and spread per ordering and point (random seeds pooled)."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        if row["kind"] == "quantized":
            groups.setdefault((row["ordering"], row["layers_low"], row["avg_bits"]), []).append(row[metric])
    return [
        {
            "ordering": ordering,
            "layers_low": layers_low,
            "avg_bits": avg_bits,
            "mean": statistics.fmean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "runs": len(values),
        }
        for (ordering, layers_low, avg_bits), values in sorted(
            groups.items(), key=lambda item: (item[0][0], item[0][1])
        )
    ]


def memory_table(rows: list[dict[str, Any]], ordering: str = "lim") -> str:
    """Markdown table like the paper's Table 4: measured model size as layers move to the low level."""
    points = sorted(
        (
            row
            for row in rows
            if row["kind"] == "quantized" and row["ordering"] == ordering and row.get("seed") is None
        ),
        key=lambda row: row["layers_low"],
    )
    if not points:
        return ""
    top = points[0]["model_bytes"]
    lines = ["| avg bits | layers at low bits | model size (MiB) | saving vs all-high |", "|---|---|---|---|"]
    lines += [
        f"| {row['avg_bits']:.2f} | {row['layers_low']} | {row['model_bytes'] / 2**20:.1f} | "
        f"{1 - row['model_bytes'] / top:.1%} |"
        for row in points
    ]
    return "\n".join(lines)
