"""`optimum-layerwise sweep`: quality against average bits for each layer ordering (the paper's Figure 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import add_model, parse_bits, parse_group_size, parse_seeds, positive_int, split_names
from .common import CommandError, load_for_evaluation


NAME = "sweep"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `sweep` command and its flags to the subcommands `commands`."""
    parser = commands.add_parser(NAME, help="quality vs average bits for each layer ordering (paper Fig. 2)")
    add_model(parser)
    parser.add_argument("--output", required=True, help="folder for sweep.json, sweep.csv, sweep.png, memory.md")
    parser.add_argument("--bits", type=parse_bits, default=(4, 2), help="high and low level (default: 4,2)")
    parser.add_argument(
        "--orderings", default="lim,reverse_lim,zd,reverse_zd,sensitivity,random", help="comma-separated importances"
    )
    parser.add_argument(
        "--seeds", type=parse_seeds, default="0,1,2", help="seeds of the random ordering (default: 0,1,2)"
    )
    parser.add_argument(
        "--step", type=positive_int("--step"), default=3, help="layers moved to the low level per point (default: 3)"
    )
    parser.add_argument("--group-size", type=parse_group_size, default=128)
    parser.add_argument("--calibration", default="shakespeare", help="LIM calibration corpus (default: shakespeare)")
    parser.add_argument(
        "--num-samples", type=positive_int("--num-samples"), default=32, help="calibration windows (default: 32)"
    )
    parser.add_argument("--eval-dataset", default="kjv", help="held-out corpus (default: kjv)")
    parser.add_argument(
        "--windows", type=positive_int("--windows"), default=8, help="perplexity windows of 512 tokens (default: 8)"
    )
    parser.add_argument("--tasks", default="", help="comma-separated lm-eval tasks to run at every point")
    parser.add_argument("--limit", type=positive_int("--limit"), default=100, help="examples per task (default: 100)")
    parser.add_argument("--pruning", default="lim,depth", help="orderings for the pruning comparison ('' = none)")


def run(args: argparse.Namespace) -> None:
    """Run the sweep of `args.model`, write its files to `args.output` and print its memory table."""
    from ..evaluation.sweep import SweepSettings, run_sweep, save_sweep

    if len(args.bits) != 2:
        raise CommandError(f"--bits for a sweep needs two levels (high,low), got {args.bits}")
    model, tokenizer = load_for_evaluation(args.model)
    settings = SweepSettings(
        bits=args.bits,
        orderings=split_names(args.orderings),
        random_seeds=args.seeds,
        step=args.step,
        calibration=args.calibration,
        num_samples=args.num_samples,
        evaluation=args.eval_dataset,
        eval_windows=args.windows,
        group_size=args.group_size,
        tasks=split_names(args.tasks),
        task_limit=args.limit,
        pruning=split_names(args.pruning),
    )
    rows = run_sweep(model, tokenizer, settings)
    files = save_sweep(
        rows, args.output, title=f"{args.model}: {args.bits[0]}->{args.bits[1]} bits, g{args.group_size}"
    )
    print((Path(args.output) / "memory.md").read_text())
    print("written: " + ", ".join(str(path) for path in files.values()))
