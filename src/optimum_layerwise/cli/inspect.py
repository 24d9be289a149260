"""`optimum-layerwise inspect`: the bit map, scores and sizes of a saved checkpoint, without loading its weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..formats.checkpoint_summary import read_checkpoint_summary
from ..formats.tables import format_layer_table, format_width_table
from ..plan.slicing_plan import SlicingPlan
from ..utils.checksums import verify_checksums
from ..utils.units import format_bytes
from .common import CommandError, print_quality


NAME = "inspect"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `inspect` command and its flags to the subcommands `commands`."""
    parser = commands.add_parser(NAME, help="bit map, scores and sizes of a saved checkpoint (no weights loaded)")
    parser.add_argument("checkpoint", help="folder or Hub repo id of a layer-wise checkpoint")
    parser.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also check every tensor and config.json against the checkpoint's sha256 manifest (reads all weights)",
    )


def run(args: argparse.Namespace) -> None:
    """Print the summary of `args.checkpoint` (as JSON with `--json`), after checking its checksums with `--verify`."""
    summary = read_checkpoint_summary(args.checkpoint)
    if args.verify:
        if not Path(args.checkpoint).is_dir():
            raise CommandError("--verify needs a local folder: download the repo first (huggingface-cli download)")
        try:
            problems = verify_checksums(args.checkpoint)
        except ValueError as error:
            raise CommandError(str(error)) from None
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise CommandError("checksum verification failed: " + "; ".join(problems[:5]) + more)
        summary["verified"] = True
    if args.as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"checkpoint: {summary['checkpoint']} ({summary['architecture']})")
    if summary.get("method") == "slicing":
        _print_slicing_summary(summary)
        return
    print(f"backend: {summary['backend']}  bits: {summary['bits']}  group size: {summary['group_size']}")
    budget = ", ".join(f"{name}={value}" for name, value in summary["budget"].items()) or "a bit map given by hand"
    print(f"importance: {summary['importance']}  average bits: {summary['average_bits']:.3f}  budget: {budget}")
    if summary["quality"]:
        print_quality(summary["quality"])
    print(f"tensors: {format_bytes(summary['tensor_bytes'])}")
    if summary.get("verified"):
        print("checksums: every tensor and config.json match the saved sha256 manifest")
    print(format_layer_table(summary["layer_scores"], summary["layer_bits"]))


def _print_slicing_summary(summary: dict[str, Any]) -> None:
    """The lines of `inspect` after the first for a sliced checkpoint."""
    from ..plan.quality import SLICING_WORDING as QUALITY_WORDING

    base = summary["base"] if summary["base"] is not None else "sparsity / 2"
    print(
        f"sliced: importance {summary['importance']}, mean sparsity {summary['sparsity']:.3f} of "
        f"{summary['hidden_size']} channels (requested {summary['requested_sparsity']}, base {base})"
    )
    if summary["quality"]:
        print_quality(summary["quality"], *QUALITY_WORDING)
    print(f"tensors: {format_bytes(summary['tensor_bytes'])}")
    if summary.get("verified"):
        print("checksums: every tensor and config.json match the saved sha256 manifest")
    plan = SlicingPlan(
        summary["hidden_size"], summary["widths"], summary["head_width"], summary["ratios"], summary["scores"]
    )
    print(format_width_table(plan))
