"""Terminal tables of a plan: each decoder layer's score, rank and bits, or its score, slicing ratio and width."""

from __future__ import annotations

from collections.abc import Sequence

from ..plan.allocation import importance_order
from ..plan.slicing_plan import SlicingPlan
from ..utils.units import format_bits


def format_layer_table(scores: Sequence[float] | None, layer_bits: dict[int, int | float] | None) -> str:
    """A terminal table of layers with their score, rank and bits."""
    num_layers = len(scores) if scores is not None else len(layer_bits)
    rank = {}
    if scores is not None:
        rank = {index: position + 1 for position, index in enumerate(importance_order(scores))}
    lines = [f"{'layer':>5}  {'score':>10}  {'rank':>4}  {'bits':>4}"]
    for index in range(num_layers):
        score = f"{scores[index]:10.5f}" if scores is not None else f"{'-':>10}"
        bits = format_bits(layer_bits[index]) if layer_bits is not None else "-"
        lines.append(f"{index:>5}  {score}  {rank.get(index, '-'):>4}  {bits:>4}")
    return "\n".join(lines)


def format_width_table(plan: SlicingPlan) -> str:
    """A terminal table of a slicing plan's layers with their score, ratio and width."""
    lines = [f"{'layer':>5}  {'score':>10}  {'ratio':>6}  {'width':>5}"]
    for index, width in enumerate(plan.widths):
        score = f"{plan.scores[index]:10.5f}" if plan.scores is not None else f"{'-':>10}"
        lines.append(f"{index:>5}  {score}  {plan.ratios[index]:6.3f}  {width:>5}")
    return "\n".join(lines)
