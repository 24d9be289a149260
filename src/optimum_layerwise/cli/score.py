"""`optimum-layerwise score`: the importance score of every decoder layer."""

from __future__ import annotations

import argparse
import json

from ..data.demo_models import resolve_model
from ..formats.heatmap import plot_importance
from ..formats.tables import format_layer_table
from ..importance import IMPORTANCE_METHODS
from ..plan.request import QuantizationRequest, default_num_samples
from ..utils.atomic import atomic_file, atomic_write_text
from .arguments import add_calibration, add_model
from .common import load_tokenizer


NAME = "score"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `score` command and its flags to the subcommands `commands`."""
    parser = commands.add_parser(NAME, help="importance score of every decoder layer")
    add_model(parser)
    add_calibration(parser, "lim")
    parser.add_argument("--json", dest="json_path", help="also write the scores to this JSON file")
    parser.add_argument("--plot", help="write a heatmap of the scores (PNG) like the paper's Figure 1")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the predicted peak memory of the job, then stop (reads only the model's config.json)",
    )


def run(args: argparse.Namespace) -> None:
    """Score the layers of `args.model`, print them as a table and write the JSON and heatmap asked for."""
    from transformers import AutoModelForCausalLM

    from ..hf.memory import predict_scoring_memory
    from ..importance import compute_importance

    path = resolve_model(args.model)
    needs_data = args.importance in IMPORTANCE_METHODS and IMPORTANCE_METHODS[args.importance].needs_data
    calibration = dict(
        dataset=args.dataset if needs_data else None,
        num_samples=args.num_samples or default_num_samples("quanto"),
        seq_len=args.seq_len,
    )
    # the whole model is loaded: refuse before that when it cannot fit (MemoryError, one line)
    choice = predict_scoring_memory(path, QuantizationRequest(importance=args.importance, **calibration))
    if args.dry_run:
        print(f"predicted peak: {choice.estimate.describe()}\nwould run: {choice.reason}")
        return
    tokenizer = load_tokenizer(path, needed_for="--dataset" if needs_data else None)
    model = AutoModelForCausalLM.from_pretrained(path)
    scores = compute_importance(model, args.importance, tokenizer=tokenizer, seed=args.seed, **calibration)
    print(format_layer_table(scores, None))
    if args.json_path:
        atomic_write_text(
            args.json_path, json.dumps({"model": args.model, "importance": args.importance, "scores": scores})
        )
    if args.plot:
        with atomic_file(args.plot) as staging:
            plot_importance(scores, staging, title=f"{args.importance} importance: {args.model}")
        print(f"heatmap written to {args.plot}")
