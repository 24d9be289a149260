"""`optimum-layerwise eval`: perplexity on held-out text and zero-shot lm-eval tasks."""

from __future__ import annotations

import argparse
import json

from ..utils.atomic import atomic_write_text
from .arguments import add_model, positive_int, split_names
from .common import load_for_evaluation


NAME = "eval"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `eval` command and its flags to the subcommands `commands`."""
    parser = commands.add_parser(NAME, help="perplexity on held-out text and zero-shot lm-eval tasks")
    add_model(parser)
    parser.add_argument("--dataset", default="kjv", help="held-out corpus name or text file (default: kjv)")
    parser.add_argument(
        "--windows", type=positive_int("--windows"), default=16, help="perplexity windows (default: 16)"
    )
    parser.add_argument(
        "--seq-len", type=positive_int("--seq-len"), default=512, help="tokens per window (default: 512)"
    )
    parser.add_argument("--tasks", default="", help="comma-separated lm-eval tasks, e.g. piqa,arc_easy")
    parser.add_argument("--limit", type=positive_int("--limit"), default=100, help="examples per task (default: 100)")
    parser.add_argument("--json", dest="json_path", help="also write the results to this JSON file")


def run(args: argparse.Namespace) -> None:
    """Print the perplexity of `args.model` on `args.dataset` and its scores on `args.tasks`, and write them as JSON
    when asked."""
    from ..evaluation.perplexity import perplexity

    model, tokenizer = load_for_evaluation(args.model)
    result = perplexity(model, args.dataset, tokenizer, seq_len=args.seq_len, num_windows=args.windows)
    results: dict = {"perplexity": {args.dataset: result.to_dict()}}
    print(f"perplexity ({args.dataset}, {result.num_windows}x{args.seq_len} tokens): {result.perplexity:.3f}")
    if split_names(args.tasks):
        from ..evaluation.tasks import evaluate_tasks

        results["tasks"] = evaluate_tasks(model, tokenizer, split_names(args.tasks), limit=args.limit)
        for task, metrics in results["tasks"].items():
            print(f"{task}: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    if args.json_path:
        atomic_write_text(args.json_path, json.dumps({"model": args.model, **results}, indent=1))
