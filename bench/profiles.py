"""Profiles behind the inference numbers (`inference.py`): where the time of a quantized Linear goes.

Per Linear shape and bit width, one decode-sized call (1 token) of our `QuantoLinear`, of optimum-quanto's `QLinear`,
of `QuantoLinear.quanto_weight()` alone and of `F.linear` on a prebuilt quanto tensor; a cProfile of
`quanto_weight()`; and the top ops of one decode step under `torch.profiler`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common


def median_call_us(function: Callable[[], Any], calls: int = 30) -> float:
    """Median wall time of `function()` in microseconds, after one warm-up call."""
    function()
    return 1e6 * statistics.median(common.timed(function)[0] for _ in range(calls))


def module_overhead(model, dtype: str) -> dict:
    """Per (shape, bits) of the model's packed Linears: decode-sized call times of our module vs quanto's, and what
    rebuilding the quanto tensor on each call costs. Also the estimated overhead per decoded token."""
    import torch
    from optimum.quanto import QLinear, qint2, qint4, qint8

    from optimum_layerwise.quantize.modules import QuantoLinear

    counts: dict[tuple[int, int, int, int | None], int] = {}
    for module in model.modules():
        if isinstance(module, QuantoLinear):
            key = (module.out_features, module.in_features, module.bits, module.group_size)
            counts[key] = counts.get(key, 0) + 1
    torch_dtype = getattr(torch, dtype)
    rows, overhead_us = [], 0.0
    with torch.no_grad():
        for (out_features, in_features, bits, group_size), count in sorted(counts.items()):
            torch.manual_seed(0)
            linear = torch.nn.Linear(in_features, out_features, bias=False, dtype=torch_dtype)
            ours = QuantoLinear.from_linear(linear, bits, group_size)
            theirs = QLinear.from_module(linear, weights={2: qint2, 4: qint4, 8: qint8}[bits])
            theirs.freeze()
            prebuilt = ours.quanto_weight()
            x = torch.randn(1, 1, in_features, dtype=torch_dtype)
            row = {
                "shape": [out_features, in_features],
                "bits": bits,
                "group_size": group_size,
                "modules": count,
                "kernel": type(prebuilt).__name__,
                "layerwise_us": median_call_us(lambda ours=ours, x=x: ours(x)),
                "quanto_us": median_call_us(lambda theirs=theirs, x=x: theirs(x)),
                "quanto_weight_us": median_call_us(ours.quanto_weight),
                "prebuilt_linear_us": median_call_us(
                    lambda prebuilt=prebuilt, x=x: torch.nn.functional.linear(x, prebuilt)
                ),
            }
            overhead_us += count * (row["layerwise_us"] - row["prebuilt_linear_us"])
            rows.append(row)
    return {
        "linears": rows,
        "overhead_ms_per_token": overhead_us / 1000,
        "quanto_weight_profile": profile_rebuild(model),
    }


def profile_rebuild(model, calls: int = 2000, top: int = 8) -> list[dict]:
    """cProfile of `quanto_weight()` on the model's first 4-bit `QuantoLinear`: where the per-call time goes, in
    microseconds per call, functions sorted by own time."""
    import cProfile
    import pstats

    from optimum_layerwise.quantize.modules import QuantoLinear

    module = next(m for m in model.modules() if isinstance(m, QuantoLinear) and m.bits == 4)
    module.quanto_weight()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        module.quanto_weight()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{Path(file).name}:{line}({name})",
            "calls_per_quanto_weight": primitive / calls,
            "own_us_per_quanto_weight": 1e6 * own / calls,
            "cumulative_us_per_quanto_weight": 1e6 * cumulative / calls,
        }
        for (file, line, name), (primitive, _, own, cumulative, _) in rows
    ]


def profile_decode_step(model, prompt, top: int = 10) -> list[dict]:
    """Top ops (self CPU time) of one decode step after a prefill of `prompt`."""
    import torch
    from torch.profiler import profile

    with torch.no_grad():
        out = model(prompt, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        with profile() as profiler:
            model(token, past_key_values=out.past_key_values, use_cache=True)
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    return [
        {"op": event.key, "self_cpu_us": event.self_cpu_time_total, "calls": event.count} for event in events[:top]
    ]
