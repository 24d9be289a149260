"""`optimum-cli layerwise ...`: the optimum-layerwise commands under optimum's CLI.

optimum loads every module of the `optimum.commands.register` namespace package and registers the commands listed
in its `REGISTER_COMMANDS`. This module stays light: the real CLI is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo


class LayerwiseCommand(BaseOptimumCLICommand):
    """Hands everything after `optimum-cli layerwise` to the `optimum-layerwise` CLI (same subcommands and flags)."""

    COMMAND = CommandInfo(name="layerwise", help="variable layer-wise quantization (optimum-layerwise)")

    @staticmethod
    def parse_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "arguments",
            nargs=argparse.REMAINDER,
            help="an optimum-layerwise command: score, quantize, inspect, eval or sweep (see `optimum-layerwise -h`)",
        )

    def run(self) -> None:
        from optimum_layerwise.cli import main

        code = main(self.args.arguments or ["--help"])
        if code:
            sys.exit(code)


REGISTER_COMMANDS = [LayerwiseCommand]
