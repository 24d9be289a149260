"""`optimum-layerwise quantize`: quantize a model with layer-wise bits and save it."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.demo_models import resolve_model
from ..formats.checkpoint_summary import read_checkpoint_summary
from ..formats.export import export_model
from ..formats.tables import format_layer_table
from ..importance import IMPORTANCE_METHODS
from ..plan.backends import BACKENDS, QUANTO_OPTIMIZERS
from ..plan.fields import GRANULARITIES
from .arguments import (
    add_calibration,
    add_dtype_and_device_map,
    add_model,
    add_output,
    add_switch,
    parse_bits,
    parse_group_size,
)
from .common import (
    CommandError,
    check_not_quantized,
    check_output,
    load_tokenizer,
    print_memory_prediction,
    print_quality,
    push_to_hub,
    save_checkpoint,
)


if TYPE_CHECKING:
    from ..hf.config import LayerwiseQuantizationConfig
    from ..plan.quantization_plan import QuantizationPlan

NAME = "quantize"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `quantize` command and its flags to the subcommands `commands`."""
    parser = commands.add_parser(NAME, help="quantize a model with layer-wise bits and save it")
    add_model(parser)
    add_output(parser, "quantized")
    parser.add_argument("--bits", type=parse_bits, default=(8, 4), help="precision levels, high to low (default: 8,4)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--target-bits", type=float, help="average bits over decoder layers")
    budget.add_argument("--memory-budget", help="bytes for the whole model, e.g. 200MB or 1.5GiB")
    budget.add_argument("--num-low-bit-layers", type=int, help="number of layers at the lowest level")
    parser.add_argument("--backend", default="quanto", help=f"{' or '.join(BACKENDS)} (default: quanto)")
    parser.add_argument("--group-size", type=parse_group_size, default=128, help="group size or 'none' (default: 128)")
    parser.add_argument("--desc-act", action="store_true", help="GPT-Q: quantize columns by decreasing activation")
    add_switch(
        parser,
        ("--sym", "symmetric int2/int4 grids (GPT-Q's default; for quanto needed by --format compressed-tensors)"),
        ("--asym", "affine int2/int4 grids (quanto's default)"),
    )
    parser.add_argument(
        "--format",
        choices=("layerwise", "compressed-tensors"),
        default="layerwise",
        help="checkpoint format: layerwise (default; reloads after `import optimum_layerwise`) or compressed-tensors "
        "(stock transformers, lm-eval and vLLM open it; implies --sym)",
    )
    parser.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default="layer",
        help="bits per decoder layer (default), per attention/MLP block or per Linear module",
    )
    parser.add_argument(
        "--optimizer",
        choices=QUANTO_OPTIMIZERS,
        help="quanto: int2/int4 scales by range, by HQQ, or searched against the calibration inputs (imatrix; the "
        "default, or max when the model has no tokenizer to read the calibration text)",
    )
    add_dtype_and_device_map(parser)
    add_switch(
        parser,
        (
            "--low-memory",
            "quantize layer by layer from the checkpoint's files, each quantized layer written to --work-dir at once "
            "(default: when the model does not fit in the memory available)",
        ),
        ("--in-memory", "load the whole model in memory"),
        dest="low_memory",
    )
    parser.add_argument(
        "--work-dir",
        help="where --low-memory keeps the quantized layers until the save (default: a hidden folder next to "
        "--output, removed after the save)",
    )
    parser.add_argument(
        "--reuse-costs",
        metavar="CHECKPOINT",
        help="allocate by the costs measured for a saved checkpoint of the same model and granularity (no new "
        "measurement)",
    )
    add_calibration(parser, "sensitivity")


def run(args: argparse.Namespace) -> None:
    """Quantize `args.model` as the flags ask, print the plan and its quality, save (and push) the checkpoint."""
    from ..hf.config import LayerwiseQuantizationConfig
    from ..model.offload import PackedLayerStore

    output = check_output(args.output, overwrite=args.overwrite, force=args.force, model=args.model)
    costs = {}
    if args.reuse_costs:
        name = "layer_costs" if args.granularity == "layer" else "unit_costs"
        summary = read_checkpoint_summary(args.reuse_costs)
        if summary.get("method") == "slicing":
            raise CommandError(f"--reuse-costs {args.reuse_costs} is a sliced checkpoint: it holds no measured costs")
        costs = {name: summary[name]}
        if not costs[name]:
            raise CommandError(
                f"--reuse-costs {args.reuse_costs} has no measured {name} (--granularity {args.granularity})"
            )
    config = LayerwiseQuantizationConfig(  # checks every flag before the model and tokenizer load
        bits=args.bits,
        backend=args.backend,
        target_bits=args.target_bits,
        memory_budget=args.memory_budget,
        num_low_bit_layers=args.num_low_bit_layers,
        importance=args.importance,
        dataset=args.dataset,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        group_size=args.group_size,
        seed=args.seed,
        **costs,
        sym=True if args.format == "compressed-tensors" and args.sym is None else args.sym,
        desc_act=args.desc_act,
        optimizer=args.optimizer,
        granularity=args.granularity,
        low_memory=args.low_memory,
        work_dir=args.work_dir or output.with_name(f".{output.name}.layerwise-work"),
    )
    if args.dry_run:
        print_memory_prediction(resolve_model(args.model), config, args.dtype, args.device_map)
        return
    model, tokenizer = _quantize_model(args, config)
    _print_result(model, model.config.quantization_config.plan)
    if args.format != "layerwise":
        _save_exported(model, tokenizer, output, args.format)
    else:
        save_checkpoint(model, tokenizer, output, keep_other_files=not args.force)
    PackedLayerStore(config.work_dir).remove()
    print(f"saved to {args.output}" + (f" ({args.format})" if args.format != "layerwise" else ""))
    push_to_hub(model, tokenizer, args.push_to_hub)


def _quantize_model(args: argparse.Namespace, config: LayerwiseQuantizationConfig) -> tuple[Any, Any]:
    """Load the model named on the command line with `config` (which quantizes it); returns it and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(args.model)
    check_not_quantized(path, args.model)
    method = IMPORTANCE_METHODS.get(args.importance)
    measured = config.layer_costs is not None or config.unit_costs is not None
    calibrated = args.backend == "gptq" or args.optimizer == "imatrix"
    needs_text = calibrated or (method is not None and method.needs_data and not measured)
    tokenizer = load_tokenizer(path, needed_for="--dataset" if needs_text else None)
    # with a tokenizer the calibration text also serves the held-out quality check that ends the quantization, and
    # the default optimizer calibrates on it
    config.tokenizer = tokenizer
    if tokenizer is None:
        config.dataset = None
        config.optimizer = args.optimizer or "max"  # no text to calibrate on
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=config, dtype=dtype, device_map=args.device_map
    )
    return model, tokenizer


def _print_result(model: Any, plan: QuantizationPlan) -> None:
    """The bit map, the sizes (with their basis) and the held-out quality of a freshly quantized model."""
    from ..model.footprint import describe_size

    print(format_layer_table(plan.layer_scores, plan.layer_bits))
    print(f"average bits: {plan.average_bits:.3f} over {len(plan.layer_bits)} decoder layers")
    config = model.config.quantization_config
    print(f"model size: {describe_size(model, config.quantization_backend(), config.group_size)}; 1 MiB = 2**20 bytes")
    print_quality(plan.quality)


def _save_exported(model: Any, tokenizer: Any, output: Path, format: str) -> None:
    """Write `model` (and `tokenizer`) to `output` in the export `format`, atomically."""
    with tempfile.TemporaryDirectory() as folder:
        companions = []
        if tokenizer is not None:
            companions = [Path(path) for path in tokenizer.save_pretrained(folder) if Path(path).is_file()]
        export_model(model, output, format, companions)
