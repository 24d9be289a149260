"""`optimum-layerwise export`: write a layer-wise checkpoint in a format stock tools open."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..formats.export import EXPORT_FORMATS, EXPORT_OPTIONS, export_checkpoint
from .common import CommandError, check_output


NAME = "export"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `export` command and its flags to the subcommands `commands`."""
    parser = commands.add_parser(
        NAME, help="write a layer-wise checkpoint in a format stock tools open (compressed-tensors)"
    )
    parser.add_argument("checkpoint", help="folder or Hub repo id of a layer-wise checkpoint")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the format to write")
    parser.add_argument(
        "--output", required=True, help="folder to write (compressed-tensors), or the .gguf file to write (gguf)"
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder or an existing file")
    parser.add_argument(
        "--base-model",
        help="gguf: the full-precision model the checkpoint was quantized from; llama.cpp quantizes its weights to "
        "the plan's bits (default: the checkpoint's own weights, dequantized)",
    )
    parser.add_argument("--llama-cpp", help="gguf: llama.cpp source tree (default: $LLAMA_CPP_DIR)")
    parser.add_argument("--imatrix", help="gguf: an importance matrix from llama-imatrix, for llama.cpp's rounding")
    parser.add_argument(
        "--llama-quantize", help="gguf: the llama-quantize binary (default: $LLAMA_QUANTIZE, <tree>/build/bin, PATH)"
    )


def run(args: argparse.Namespace) -> None:
    """Export `args.checkpoint` to `args.output` in `args.format`, with the options of that format only."""
    options = {name: getattr(args, name) for name in EXPORT_OPTIONS["gguf"]}
    if args.format == "gguf":
        output = _check_output_file(args.output, force=args.force, suffix=".gguf")
    elif any(options.values()):
        flags = ", ".join("--" + name.replace("_", "-") for name in options)
        raise CommandError(f"{flags} are options of --format gguf")
    else:
        output, options = check_output(args.output, overwrite=False, force=args.force, model=args.checkpoint), {}
    export_checkpoint(args.checkpoint, output, args.format, **options)
    print(f"saved to {args.output} ({args.format}); it loads without `import optimum_layerwise`")


def _check_output_file(output: str, *, force: bool, suffix: str) -> Path:
    """Check that the file `--output` may be written before any work is done; returns its absolute path."""
    path = Path(output).expanduser().absolute()
    if path.suffix != suffix:
        raise CommandError(f"--output {output} must name a {suffix} file")
    if path.is_dir():
        raise CommandError(f"--output {output} is a folder: name the {suffix} file to write")
    if path.exists() and not force:
        raise CommandError(f"--output {output} exists; pass --force to replace it")
    return path
