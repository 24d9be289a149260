#!/usr/bin/env python3
"""The layout of one or two source trees as a table (a dev tool, stdlib only): the findings of
`tools/architecture.py`, and with `--trace` the modules one tiny quantization request runs (in a subprocess).

    python tools/architecture_report.py [SRC_DIR]                      # the table for one tree (default: src)
    python tools/architecture_report.py --compare OLD_SRC NEW_SRC      # a before/after markdown table
    python tools/architecture_report.py --compare OLD_SRC NEW_SRC --trace [--python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from architecture import MAX_LINES, ROOT, Layout, Report, analyze, load_layout, offenders, short


# ---------------------------------------------------------------------------------------------------------------------
# one request, traced: which modules it runs and how often a call climbs back up the floors

TRACE_SCRIPT = r"""
import collections, json, os, sys, tempfile, threading
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig

calls, called = collections.Counter(), set()

def profile(frame, event, arg):
    if event != "call":
        return
    callee = frame.f_globals.get("__name__") or ""
    if not callee.startswith("optimum_layerwise") or frame.f_code.co_name == "<module>":
        return
    called.add(callee)
    caller = (frame.f_back.f_globals.get("__name__") or "") if frame.f_back is not None else ""
    if caller != callee and caller.startswith("optimum_layerwise"):
        calls[caller, callee] += 1

with tempfile.TemporaryDirectory() as tmp:
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    AutoModelForCausalLM.from_config(config).save_pretrained(f"{tmp}/fp")
    threading.setprofile(profile)
    sys.setprofile(profile)
    import optimum_layerwise
    quantization = optimum_layerwise.LayerwiseQuantizationConfig(bits=(8, 4), layer_bits={0: 8, 1: 4})
    model = AutoModelForCausalLM.from_pretrained(f"{tmp}/fp", quantization_config=quantization)
    model.save_pretrained(f"{tmp}/q")
    AutoModelForCausalLM.from_pretrained(f"{tmp}/q")
    sys.setprofile(None)
    threading.setprofile(None)
print("TRACE", json.dumps({"file": optimum_layerwise.__file__, "modules": sorted(called),
                           "calls": [[a, b, n] for (a, b), n in sorted(calls.items())]}))
"""


@dataclass
class Trace:
    """Modules whose functions one request called, and the calls that went from a lower floor to a higher one."""

    layout: Layout
    package_file: str
    modules: list[str]
    climbs: list[tuple[str, str, int]]


def trace_request(src: Path | str, python: str = sys.executable, timeout: float = 600) -> Trace:
    """Run the tiny quantize / save / reload request with `src` first on `PYTHONPATH` and classify its calls."""
    layout = load_layout(src)
    env = {**os.environ, "PYTHONPATH": str(layout.src), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(
        [python, "-c", TRACE_SCRIPT], env=env, capture_output=True, text=True, timeout=timeout, cwd=layout.src
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("TRACE ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the traced request failed under {layout.src}:\n{done.stderr[-3000:]}")
    data = json.loads(lines[-1].removeprefix("TRACE "))
    if not Path(data["file"]).resolve().is_relative_to(layout.src):
        raise RuntimeError(f"the traced request imported {data['file']}, not the tree under {layout.src}")
    climbs = []
    for caller, callee, count in data["calls"]:
        low, high = layout.floor(caller), layout.floor(callee)
        if low is not None and high is not None and low < high:
            climbs.append((caller, callee, count))
    return Trace(layout, data["file"], data["modules"], climbs)


# ---------------------------------------------------------------------------------------------------------------------
# command line


def summary_rows(report: Report, trace: Trace | None) -> dict[str, str]:
    """Metric -> value, for the markdown table."""
    rows = {
        "flat modules": len(report.flat),
        "modules outside every floor": len(report.unplaced),
        f"files over {MAX_LINES} lines": len(report.long),
        "upward or sideways imports": len(report.layering),
        "torch/backend imports in plan/ or utils/": len(report.pure),
        "import cycles (all / not allowed)": f"{len(report.cycles)} / {len(report.bad_cycles)}",
        "function-level imports of own modules": report.function_level,
        "modules (files)": len(report.layout.modules),
    }
    if trace is not None:
        rows["modules visited by one request"] = len(trace.modules)
        rows["call edges climbing up the floors (calls)"] = (
            f"{len(trace.climbs)} ({sum(count for *_, count in trace.climbs)})"
        )
    return {name: str(value) for name, value in rows.items()}


def markdown_table(columns: dict[str, dict[str, str]]) -> str:
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for metric in next(iter(columns.values())):
        lines.append(f"| {metric} | " + " | ".join(columns[name][metric] for name in names) + " |")
    return "\n".join(lines)


def details(title: str, report: Report, trace: Trace | None) -> str:
    """The offender lists of one tree (and the trace's climbing call edges)."""
    lines = [f"### {title}"]
    for rule, items in offenders(report).items():
        lines.append(f"\n{rule}: {len(items)}")
        lines.extend(f"  - {item}" for item in items)
    if trace is not None:
        lines.append(f"\nmodules visited by one request: {len(trace.modules)}")
        lines.append("  " + ", ".join(short(name) for name in trace.modules))
        lines.append(f"\ncall edges climbing up the floors in one request: {len(trace.climbs)}")
        label = trace.layout.label
        lines.extend(f"  - {label(a)} -> {label(b)} ({n} calls)" for a, b, n in trace.climbs)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", nargs="?", default=str(ROOT / "src"), help="source directory (default: src)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="two source directories")
    parser.add_argument("--trace", action="store_true", help="also trace one quantization request (a subprocess)")
    parser.add_argument("--python", default=sys.executable, metavar="PATH", help="the Python of the traced request")
    parser.add_argument("--src", dest="trace_src", metavar="DIR", help="the source directory to trace (default: SRC)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the (last) tree has an offender")
    args = parser.parse_args(argv)
    sources = args.compare or [args.src]
    columns, texts, report = {}, [], None
    for src in sources:
        report = analyze(src)
        trace_src = args.trace_src if args.trace_src and not args.compare else src
        trace = trace_request(trace_src, args.python) if args.trace else None
        title = ("before: " if args.compare and src == sources[0] else "after: " if args.compare else "") + src
        columns[title] = summary_rows(report, trace)
        texts.append(details(title, report, trace))
    print(markdown_table(columns), *texts, sep="\n\n")
    failed = any(items for rule, items in offenders(report).items() if "allowed:" not in rule)
    return int(args.check and failed)


if __name__ == "__main__":
    sys.exit(main())
