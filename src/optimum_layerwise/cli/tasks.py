"""`optimum-layerwise tasks`: write the offline lm-eval task files."""

from __future__ import annotations

import argparse

from ..utils.atomic import atomic_folder
from .arguments import split_names
from .common import check_output


NAME = "tasks"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `tasks` command and its flags to the subcommands `commands`."""
    parser = commands.add_parser(
        NAME, help="write the offline lm-eval task files, for `--include_path` of `lm_eval` or `lm-eval`"
    )
    parser.add_argument("--output", required=True, help="folder to write the YAML files to")
    parser.add_argument("--tasks", help="comma-separated tasks (default: the paper's five)")


def run(args: argparse.Namespace) -> None:
    """Write the YAML files of `args.tasks` (default: the paper's) to the new folder `args.output`."""
    from ..evaluation.tasks import PAPER_TASKS, write_task_configs

    output = check_output(args.output, overwrite=False, force=False)
    names = split_names(args.tasks) if args.tasks else PAPER_TASKS
    with atomic_folder(output, keep_other_files=False) as staging:
        written = write_task_configs(names, staging)
    print(f"wrote {len(written)} task files to {args.output}; pass `--include_path {args.output}` to lm_eval")
