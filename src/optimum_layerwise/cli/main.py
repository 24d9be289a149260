"""`optimum-layerwise`: the parser of every command, assembled from the command modules, and the dispatch to them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import evaluate, export, inspect, lm_eval, quantize, score, sweep, tasks
from . import slice as slice_command
from .arguments import CommandParser, positive_int
from .common import CommandError


# in the order `optimum-layerwise --help` lists them
COMMANDS = {
    command.NAME: command
    for command in (score, quantize, slice_command, evaluate, sweep, lm_eval, tasks, export, inspect)
}


def build_parser() -> argparse.ArgumentParser:
    """The `optimum-layerwise` argument parser."""
    parser = CommandParser(prog="optimum-layerwise", description="Variable layer-wise quantization of causal LMs.")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the global flags and every subcommand with its flags to `parser` (also `optimum-cli layerwise`'s)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info logs")
    parser.add_argument(
        "--threads",
        type=positive_int("--threads"),
        help="torch threads (default: torch's, one per core); OpenMP threads wait passively unless OMP_WAIT_POLICY "
        "is set",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for command in COMMANDS.values():
        command.add_parser(commands)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (130 after Ctrl-C, with one line instead of a traceback)."""
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("optimum-layerwise: interrupted", file=sys.stderr)
        return 130
    return run_command(args)


def configure_threads(threads: int | None) -> None:
    """Make OpenMP threads sleep rather than spin while they wait (unless `OMP_WAIT_POLICY` is set), then use
    `threads` torch threads when given.

    Spinning threads are fast on an idle machine and ruinous on a shared one: with another job on the other core of a
    2-core machine, GPT-Q of one 576 -> 1536 Linear took 1.3-9.6 s on 2 spinning threads against 0.2-0.5 s on 2
    passive ones (0.2-0.3 s on 1 thread). OpenMP reads the variable when torch is first imported, so this has effect
    only before that.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command `args.command`; returns the exit code. Errors end in one line on stderr."""
    try:
        configure_threads(args.threads)
        from transformers.utils import logging

        if args.quiet:
            logging.set_verbosity_error()
            logging.disable_progress_bar()
        COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print(f"optimum-layerwise {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, ImportError, OSError, NotImplementedError, MemoryError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"optimum-layerwise {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
