"""`optimum-layerwise lm-eval`: lm-eval's own command line, able to open layer-wise checkpoints."""

from __future__ import annotations

import argparse
import sys

from .common import CommandError


NAME = "lm-eval"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `lm-eval` command to the subcommands `commands`: it parses nothing and keeps every argument."""
    commands.add_parser(
        NAME,
        pass_through=True,
        add_help=False,
        help="lm-eval's own command line (every flag of `lm_eval`), able to open layer-wise checkpoints",
    )


def run(args: argparse.Namespace) -> None:
    """lm-eval's own command line with `args.arguments`, after the layer-wise formats are registered with transformers
    (stock `lm_eval` fails on `quant_method: layerwise` before anything of ours could be imported)."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        from ..evaluation.tasks import INSTALL_COMMAND

        raise CommandError(f"needs lm-eval: {INSTALL_COMMAND}") from None
    from ..hf.registration import register

    register()  # quant_method "layerwise" and "layerwise_slicing", before lm-eval loads a model

    saved = sys.argv
    sys.argv = ["lm_eval", *args.arguments]
    try:
        cli_evaluate()
    except SystemExit as exit:
        if exit.code not in (None, 0):
            raise CommandError(f"lm_eval exited with {exit.code}") from None
    finally:
        sys.argv = saved
