"""`optimum-layerwise slice`: slice each decoder layer's residual stream by its own ratio and save the model."""

from __future__ import annotations

import argparse

from ..data.demo_models import resolve_model
from ..formats.tables import format_width_table
from .arguments import IMPORTANCE_HELP, add_calibration, add_dtype_and_device_map, add_model, add_output
from .common import (
    check_not_quantized,
    check_output,
    load_tokenizer,
    print_memory_prediction,
    print_quality,
    push_to_hub,
    save_checkpoint,
)


NAME = "slice"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `slice` command and its flags to the subcommands `commands`."""
    parser = commands.add_parser(
        NAME, help="slice each decoder layer's residual stream by its own ratio (DynamicSlicing) and save it"
    )
    add_model(parser)
    add_output(parser, "sliced")
    parser.add_argument(
        "--sparsity", type=float, default=0.25, help="mean share of the residual stream removed (default: 0.25)"
    )
    parser.add_argument(
        "--base", type=float, help="ratio of the most important layer, in [0, sparsity] (default: sparsity / 2)"
    )
    add_dtype_and_device_map(parser)
    add_calibration(parser, "lim", methods=f"constant (SliceGPT), {IMPORTANCE_HELP}", num_samples="128")


def run(args: argparse.Namespace) -> None:
    """Slice `args.model` as the flags ask, print the widths and the quality, save (and push) the checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..hf.slicing_config import LayerwiseSlicingConfig
    from ..plan.quality import SLICING_WORDING as QUALITY_WORDING

    output = check_output(args.output, overwrite=args.overwrite, force=args.force, model=args.model)
    config = LayerwiseSlicingConfig(  # checks every flag before the model and tokenizer load
        sparsity=args.sparsity,
        importance=args.importance,
        base=args.base,
        dataset=args.dataset,
        num_samples=args.num_samples or 128,
        seq_len=args.seq_len,
        seed=args.seed,
    )
    path = resolve_model(args.model)
    check_not_quantized(path, args.model)
    if args.dry_run:
        print_memory_prediction(path, config, args.dtype, args.device_map)
        return
    config.tokenizer = load_tokenizer(path)
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=config, dtype=dtype, device_map=args.device_map
    )
    plan = model.config.quantization_config.plan
    print(format_width_table(plan))
    print(f"mean sparsity: {plan.sparsity:.3f} over {len(plan.widths)} decoder layers (head: {plan.head_width})")
    print(f"parameters: {sum(parameter.numel() for parameter in model.parameters()):,}")
    print_quality(plan.quality, *QUALITY_WORDING)
    save_checkpoint(model, config.tokenizer, output, keep_other_files=not args.force)
    print(f"saved to {args.output}")
    push_to_hub(model, config.tokenizer, args.push_to_hub)
