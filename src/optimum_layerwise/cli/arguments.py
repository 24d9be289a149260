"""Argument types and argument groups shared by the `optimum-layerwise` commands, and their parser class."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..data.demo_models import DEMO_MODEL


DEFAULT_CALIBRATION = "shakespeare"
IMPORTANCE_HELP = "sensitivity, sensitivity_kl, lim, reverse_lim, zd, reverse_zd, random or depth"


class CommandParser(argparse.ArgumentParser):
    """Parser of the subcommands. One built with `pass_through=True` parses nothing: it keeps every argument as given
    in `arguments`, for another program's own parser (`lm-eval`)."""

    def __init__(self, *args: Any, pass_through: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pass_through = pass_through

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.pass_through:
            return super().parse_known_args(args, namespace)
        namespace = namespace if namespace is not None else argparse.Namespace()
        namespace.arguments = list(sys.argv[1:] if args is None else args)
        return namespace, []

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_bits(value: str) -> tuple[int, ...]:
    """An argparse type: comma-separated precision levels such as `4,2`."""
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--bits must be comma-separated integers such as 4,2, got {value!r}"
        ) from None


def positive_int(flag: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least 1, the error naming `flag`."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {value!r}")
        return number

    return parse


def parse_seed(value: str) -> int:
    """An argparse type: a seed in [0, 2**63)."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number < 2**63:
        raise argparse.ArgumentTypeError(f"--seed must be an integer in [0, 2**63), got {value!r}")
    return number


def parse_seeds(value: str) -> list[int]:
    """An argparse type: comma-separated seeds (an empty list is refused)."""
    try:
        return [parse_seed(part) for part in split_names(value)] or [parse_seed("")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be comma-separated integers in [0, 2**63) such as 0,1,2, got {value!r}"
        ) from None


def parse_group_size(value: str) -> int | None:
    """An argparse type: a group size, or `None` (per-channel) for 'none' or 'per-channel'."""
    if value.lower() in ("none", "per-channel"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--group-size must be an integer or 'none', got {value!r}") from None


def split_names(value: str) -> list[str]:
    """The non-empty items of a comma-separated list, stripped."""
    return [part.strip() for part in value.split(",") if part.strip()]


def add_model(parser: argparse.ArgumentParser) -> None:
    """Add the optional positional `model` (default: the offline demo model)."""
    parser.add_argument(
        "model",
        nargs="?",
        default=DEMO_MODEL,
        help=f"local folder, Hub id, or offline demo model name (default: {DEMO_MODEL})",
    )


def add_output(parser: argparse.ArgumentParser, kind: str) -> None:
    """Add `--output`, `--overwrite`, `--force` and `--push-to-hub` of a command that saves a `kind` checkpoint."""
    parser.add_argument("--output", required=True, help=f"folder to write the {kind} checkpoint to")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an output folder that holds a layer-wise checkpoint"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="also replace a non-empty output folder that is not a layer-wise checkpoint (its content is deleted)",
    )
    parser.add_argument("--push-to-hub", metavar="REPO", help="also upload the checkpoint to this Hub repo")


def add_calibration(
    parser: argparse.ArgumentParser,
    importance: str,
    methods: str = IMPORTANCE_HELP,
    num_samples: str = "8 for scoring, 128 with --backend gptq",
) -> None:
    """Add `--importance` (default: `importance`, help naming `methods`) and the calibration data flags."""
    parser.add_argument("--importance", default=importance, help=f"{methods} (default: {importance})")
    parser.add_argument(
        "--dataset",
        default=DEFAULT_CALIBRATION,
        help=f"calibration corpus name or text file (default: {DEFAULT_CALIBRATION})",
    )
    parser.add_argument(
        "--num-samples", type=positive_int("--num-samples"), help=f"calibration windows (default: {num_samples})"
    )
    parser.add_argument(
        "--seq-len", type=positive_int("--seq-len"), default=512, help="tokens per calibration window (default: 512)"
    )
    parser.add_argument("--seed", type=parse_seed, default=0, help="seed of 'random' and of the calibration subset")


def add_switch(
    parser: argparse.ArgumentParser, on: tuple[str, str], off: tuple[str, str], dest: str | None = None
) -> None:
    """Two exclusive flags, `(flag, help)` each, that set `dest` (default: the first flag's name) to True or False; the
    value is None when neither is given."""
    dest = dest or on[0].removeprefix("--").replace("-", "_")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(on[0], dest=dest, action="store_const", const=True, help=on[1])
    group.add_argument(off[0], dest=dest, action="store_const", const=False, help=off[1])


def add_dtype_and_device_map(parser: argparse.ArgumentParser) -> None:
    """Add `--dtype` and `--device-map`, how the model to compress is loaded, and `--dry-run`."""
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    parser.add_argument("--device-map", help="accelerate device map for loading, e.g. auto or cpu")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the predicted peak memory of each path and the path the job would take, then stop (reads only "
        "the model's config.json)",
    )
