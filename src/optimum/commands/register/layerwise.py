"""`optimum-cli layerwise ...`: the optimum-layerwise commands under optimum's CLI, with the same subcommands and
flags as `optimum-layerwise` (its parser builds them).

optimum loads every module of the `optimum.commands.register` namespace package and registers the commands listed
in its `REGISTER_COMMANDS`. `optimum_layerwise.cli` imports neither torch nor transformers until a command runs, so
this costs every `optimum-cli` call a fraction of a second.
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
        from optimum_layerwise.cli import add_arguments

        add_arguments(parser)

    def run(self) -> None:
        from optimum_layerwise.cli import run_command

        code = run_command(self.args)
        if code:
            sys.exit(code)


REGISTER_COMMANDS = [LayerwiseCommand]
