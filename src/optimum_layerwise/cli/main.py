"""`optimum-layerwise`: score layers, quantize a model, inspect a checkpoint from the terminal."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..formats.export import EXPORT_FORMATS, EXPORT_OPTIONS
from ..utils.atomic import atomic_file, atomic_write_text
from ..utils.units import format_bits, format_bytes


DEFAULT_CALIBRATION = "shakespeare"


class CommandError(Exception):
    """A user error reported as one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    """Parser of the subcommands. One built with `pass_through=True` parses nothing: it keeps every argument as given
    in `arguments`, for another program's own parser (`lm-eval`)."""

    def __init__(self, *args, pass_through: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.pass_through = pass_through

    def parse_known_args(self, args=None, namespace=None):
        if not self.pass_through:
            return super().parse_known_args(args, namespace)
        namespace = namespace if namespace is not None else argparse.Namespace()
        namespace.arguments = list(sys.argv[1:] if args is None else args)
        return namespace, []

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bits(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--bits must be comma-separated integers such as 4,2, got {value!r}"
        ) from None


def _positive_int(flag: str):
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


def _seed(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number < 2**63:
        raise argparse.ArgumentTypeError(f"--seed must be an integer in [0, 2**63), got {value!r}")
    return number


def _seeds(value: str) -> list[int]:
    try:
        return [_seed(part) for part in _split(value)] or [_seed("")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be comma-separated integers in [0, 2**63) such as 0,1,2, got {value!r}"
        ) from None


def _group_size(value: str) -> int | None:
    if value.lower() in ("none", "per-channel"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--group-size must be an integer or 'none', got {value!r}") from None


def _add_model(parser: argparse.ArgumentParser) -> None:
    from ..data.demo_models import DEMO_MODEL

    parser.add_argument(
        "model",
        nargs="?",
        default=DEMO_MODEL,
        help=f"local folder, Hub id, or offline demo model name (default: {DEMO_MODEL})",
    )


IMPORTANCE_HELP = "sensitivity, sensitivity_kl, lim, reverse_lim, zd, reverse_zd, random or depth"


def _add_output(parser: argparse.ArgumentParser, kind: str) -> None:
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


def _add_calibration(
    parser: argparse.ArgumentParser,
    importance: str,
    methods: str = IMPORTANCE_HELP,
    num_samples: str = "8 for scoring, 128 with --backend gptq",
) -> None:
    parser.add_argument("--importance", default=importance, help=f"{methods} (default: {importance})")
    parser.add_argument(
        "--dataset",
        default=DEFAULT_CALIBRATION,
        help=f"calibration corpus name or text file (default: {DEFAULT_CALIBRATION})",
    )
    parser.add_argument(
        "--num-samples", type=_positive_int("--num-samples"), help=f"calibration windows (default: {num_samples})"
    )
    parser.add_argument(
        "--seq-len", type=_positive_int("--seq-len"), default=512, help="tokens per calibration window (default: 512)"
    )
    parser.add_argument("--seed", type=_seed, default=0, help="seed of 'random' and of the calibration subset")


def _add_switch(
    parser: argparse.ArgumentParser, on: tuple[str, str], off: tuple[str, str], dest: str | None = None
) -> None:
    """Two exclusive flags, `(flag, help)` each, that set `dest` (default: the first flag's name) to True or False; the
    value is None when neither is given."""
    dest = dest or on[0].removeprefix("--").replace("-", "_")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(on[0], dest=dest, action="store_const", const=True, help=on[1])
    group.add_argument(off[0], dest=dest, action="store_const", const=False, help=off[1])


def build_parser() -> argparse.ArgumentParser:
    """The `optimum-layerwise` argument parser."""
    parser = _Parser(prog="optimum-layerwise", description="Variable layer-wise quantization of causal LMs.")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the global flags and every subcommand with its flags to `parser` (also `optimum-cli layerwise`'s)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info logs")
    parser.add_argument(
        "--threads",
        type=_positive_int("--threads"),
        help="torch threads (default: torch's, one per core); OpenMP threads wait passively unless OMP_WAIT_POLICY "
        "is set",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    score = commands.add_parser("score", help="importance score of every decoder layer")
    _add_model(score)
    _add_calibration(score, "lim")
    score.add_argument("--json", dest="json_path", help="also write the scores to this JSON file")
    score.add_argument("--plot", help="write a heatmap of the scores (PNG) like the paper's Figure 1")

    quantize = commands.add_parser("quantize", help="quantize a model with layer-wise bits and save it")
    _add_model(quantize)
    _add_output(quantize, "quantized")
    quantize.add_argument("--bits", type=_bits, default=(8, 4), help="precision levels, high to low (default: 8,4)")
    budget = quantize.add_mutually_exclusive_group()
    budget.add_argument("--target-bits", type=float, help="average bits over decoder layers")
    budget.add_argument("--memory-budget", help="bytes for the whole model, e.g. 200MB or 1.5GiB")
    budget.add_argument("--num-low-bit-layers", type=int, help="number of layers at the lowest level")
    quantize.add_argument("--backend", default="quanto", help="quanto or gptq (default: quanto)")
    quantize.add_argument("--group-size", type=_group_size, default=128, help="group size or 'none' (default: 128)")
    quantize.add_argument("--desc-act", action="store_true", help="GPT-Q: quantize columns by decreasing activation")
    _add_switch(
        quantize,
        ("--sym", "symmetric int2/int4 grids (GPT-Q's default; for quanto needed by --format compressed-tensors)"),
        ("--asym", "affine int2/int4 grids (quanto's default)"),
    )
    quantize.add_argument(
        "--format",
        choices=("layerwise", "compressed-tensors"),
        default="layerwise",
        help="checkpoint format: layerwise (default; reloads after `import optimum_layerwise`) or compressed-tensors "
        "(stock transformers, lm-eval and vLLM open it; implies --sym)",
    )
    quantize.add_argument(
        "--granularity",
        choices=("layer", "block", "module"),
        default="layer",
        help="bits per decoder layer (default), per attention/MLP block or per Linear module",
    )
    quantize.add_argument(
        "--optimizer",
        choices=("max", "hqq", "imatrix"),
        help="quanto: int2/int4 scales by range, by HQQ, or searched against the calibration inputs (imatrix; the "
        "default, or max when the model has no tokenizer to read the calibration text)",
    )
    quantize.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    quantize.add_argument("--device-map", help="accelerate device map for loading, e.g. auto or cpu")
    _add_switch(
        quantize,
        (
            "--low-memory",
            "quantize layer by layer from the checkpoint's files, each quantized layer written to --work-dir at once "
            "(default: when the model does not fit in the memory available)",
        ),
        ("--in-memory", "load the whole model in memory"),
        dest="low_memory",
    )
    quantize.add_argument(
        "--work-dir",
        help="where --low-memory keeps the quantized layers until the save (default: a hidden folder next to "
        "--output, removed after the save)",
    )
    quantize.add_argument(
        "--reuse-costs",
        metavar="CHECKPOINT",
        help="allocate by the costs measured for a saved checkpoint of the same model and granularity (no new "
        "measurement)",
    )
    _add_calibration(quantize, "sensitivity")

    slicer = commands.add_parser(
        "slice", help="slice each decoder layer's residual stream by its own ratio (DynamicSlicing) and save it"
    )
    _add_model(slicer)
    _add_output(slicer, "sliced")
    slicer.add_argument(
        "--sparsity", type=float, default=0.25, help="mean share of the residual stream removed (default: 0.25)"
    )
    slicer.add_argument(
        "--base", type=float, help="ratio of the most important layer, in [0, sparsity] (default: sparsity / 2)"
    )
    slicer.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    slicer.add_argument("--device-map", help="accelerate device map for loading, e.g. auto or cpu")
    _add_calibration(slicer, "lim", methods=f"constant (SliceGPT), {IMPORTANCE_HELP}", num_samples="128")

    evaluate = commands.add_parser("eval", help="perplexity on held-out text and zero-shot lm-eval tasks")
    _add_model(evaluate)
    evaluate.add_argument("--dataset", default="kjv", help="held-out corpus name or text file (default: kjv)")
    evaluate.add_argument(
        "--windows", type=_positive_int("--windows"), default=16, help="perplexity windows (default: 16)"
    )
    evaluate.add_argument(
        "--seq-len", type=_positive_int("--seq-len"), default=512, help="tokens per window (default: 512)"
    )
    evaluate.add_argument("--tasks", default="", help="comma-separated lm-eval tasks, e.g. piqa,arc_easy")
    evaluate.add_argument(
        "--limit", type=_positive_int("--limit"), default=100, help="examples per task (default: 100)"
    )
    evaluate.add_argument("--json", dest="json_path", help="also write the results to this JSON file")

    sweep = commands.add_parser("sweep", help="quality vs average bits for each layer ordering (paper Fig. 2)")
    _add_model(sweep)
    sweep.add_argument("--output", required=True, help="folder for sweep.json, sweep.csv, sweep.png, memory.md")
    sweep.add_argument("--bits", type=_bits, default=(4, 2), help="high and low level (default: 4,2)")
    sweep.add_argument(
        "--orderings", default="lim,reverse_lim,zd,reverse_zd,sensitivity,random", help="comma-separated importances"
    )
    sweep.add_argument("--seeds", type=_seeds, default="0,1,2", help="seeds of the random ordering (default: 0,1,2)")
    sweep.add_argument(
        "--step", type=_positive_int("--step"), default=3, help="layers moved to the low level per point (default: 3)"
    )
    sweep.add_argument("--group-size", type=_group_size, default=128)
    sweep.add_argument("--calibration", default="shakespeare", help="LIM calibration corpus (default: shakespeare)")
    sweep.add_argument(
        "--num-samples", type=_positive_int("--num-samples"), default=32, help="calibration windows (default: 32)"
    )
    sweep.add_argument("--eval-dataset", default="kjv", help="held-out corpus (default: kjv)")
    sweep.add_argument(
        "--windows", type=_positive_int("--windows"), default=8, help="perplexity windows of 512 tokens (default: 8)"
    )
    sweep.add_argument("--tasks", default="", help="comma-separated lm-eval tasks to run at every point")
    sweep.add_argument("--limit", type=_positive_int("--limit"), default=100, help="examples per task (default: 100)")
    sweep.add_argument("--pruning", default="lim,depth", help="orderings for the pruning comparison ('' = none)")

    commands.add_parser(
        "lm-eval",
        pass_through=True,
        add_help=False,
        help="lm-eval's own command line (every flag of `lm_eval`), able to open layer-wise checkpoints",
    )
    tasks = commands.add_parser(
        "tasks", help="write the offline lm-eval task files, for `--include_path` of `lm_eval` or `lm-eval`"
    )
    tasks.add_argument("--output", required=True, help="folder to write the YAML files to")
    tasks.add_argument("--tasks", help="comma-separated tasks (default: the paper's five)")

    export = commands.add_parser(
        "export", help="write a layer-wise checkpoint in a format stock tools open (compressed-tensors)"
    )
    export.add_argument("checkpoint", help="folder or Hub repo id of a layer-wise checkpoint")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the format to write")
    export.add_argument(
        "--output", required=True, help="folder to write (compressed-tensors), or the .gguf file to write (gguf)"
    )
    export.add_argument("--force", action="store_true", help="replace a non-empty output folder or an existing file")
    export.add_argument(
        "--base-model",
        help="gguf: the full-precision model the checkpoint was quantized from; llama.cpp quantizes its weights to "
        "the plan's bits (default: the checkpoint's own weights, dequantized)",
    )
    export.add_argument("--llama-cpp", help="gguf: llama.cpp source tree (default: $LLAMA_CPP_DIR)")
    export.add_argument("--imatrix", help="gguf: an importance matrix from llama-imatrix, for llama.cpp's rounding")
    export.add_argument(
        "--llama-quantize", help="gguf: the llama-quantize binary (default: $LLAMA_QUANTIZE, <tree>/build/bin, PATH)"
    )

    inspect = commands.add_parser(
        "inspect", help="bit map, scores and sizes of a saved checkpoint (no weights loaded)"
    )
    inspect.add_argument("checkpoint", help="folder or Hub repo id of a layer-wise checkpoint")
    inspect.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of a table")
    inspect.add_argument(
        "--verify",
        action="store_true",
        help="also check every tensor and config.json against the checkpoint's sha256 manifest (reads all weights)",
    )


def format_layer_table(scores: Sequence[float] | None, layer_bits: dict[int, int | float] | None) -> str:
    """A terminal table of layers with their score, rank and bits."""
    from ..plan.allocation import importance_order

    num_layers = len(scores) if scores is not None else len(layer_bits)
    rank = {}
    if scores is not None:
        rank = {index: position + 1 for position, index in enumerate(importance_order(scores))}
    lines = [f"{'layer':>5}  {'score':>10}  {'rank':>4}  {'bits':>4}"]
    for index in range(num_layers):
        score = f"{scores[index]:10.5f}" if scores is not None else f"{'-':>10}"
        bits = format_bits(layer_bits[index]) if layer_bits is not None else "-"
        lines.append(f"{index:>5}  {score}  {rank.get(index, '-'):>4}  {bits:>4}")
    return "\n".join(lines)


def _is_layerwise_checkpoint(folder: Path) -> bool:
    try:
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return False
    from ..hf.config import layerwise_dict
    from ..hf.slicing_config import SLICING_METHOD

    return isinstance(saved, dict) and (
        layerwise_dict(saved) is not None or saved.get("quant_method") == SLICING_METHOD
    )


def check_output(output: str, *, overwrite: bool, force: bool, model: str | None = None) -> Path:
    """Check that `--output` may be written, before any work is done; returns its absolute path.

    Refused always: a file, the current folder or one of its parents, the home folder, and the input model's folder
    or one of its parents. A non-empty folder is replaced only when it holds a layer-wise checkpoint and `overwrite`
    is set, or whatever it holds when `force` is set.
    """
    from ..utils.atomic import check_target_folder

    try:
        path = check_target_folder(output, "--output")
    except ValueError as error:
        raise CommandError(str(error).replace("`--output`=", "--output ")) from None
    if path == Path.home().resolve():
        raise CommandError(f"--output {output} is your home folder: choose a new folder")
    if model is not None and os.path.isdir(model):
        source = Path(os.path.realpath(model))
        if path == source or path in source.parents:
            raise CommandError(f"--output {output} would replace the input model {model}: choose another folder")
    if path.is_dir() and any(path.iterdir()):
        if _is_layerwise_checkpoint(path):
            if not (overwrite or force):
                raise CommandError(f"--output {output} holds a layer-wise checkpoint; pass --overwrite to replace it")
        elif not force:
            names = sorted(entry.name for entry in path.iterdir())
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise CommandError(
                f"--output {output} is not empty and is not a layer-wise checkpoint (it holds {shown}); choose a new "
                "folder, or pass --force to delete its content and replace it"
            )
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise CommandError(f"--output {output} is not writable: {error.strerror or error}") from None
    return path


def _load_tokenizer(path: str, needed_for: str | None = "--dataset"):
    """The model's tokenizer; when it cannot be loaded, `None` if nothing needs it, else a one-line error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as error:
        if needed_for is None:
            return None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"cannot load the tokenizer of {path}, needed for {needed_for}: {reason}") from None


def _check_not_quantized(path: str, model: str) -> None:
    from transformers import AutoConfig

    saved = getattr(AutoConfig.from_pretrained(path), "quantization_config", None)
    if saved is not None:
        method = saved.get("quant_method") if isinstance(saved, dict) else getattr(saved, "quant_method", "?")
        raise CommandError(
            f"{model} is already quantized (quant_method={str(method)!r}): quantize its full-precision original. "
            "To plan another budget from a layer-wise checkpoint's measured costs, pass it as --reuse-costs."
        )


def _score(args) -> None:
    from transformers import AutoModelForCausalLM

    from ..data.demo_models import resolve_model
    from ..hf.config import default_num_samples
    from ..importance import IMPORTANCE_METHODS, compute_importance

    path = resolve_model(args.model)
    needs_data = args.importance in IMPORTANCE_METHODS and IMPORTANCE_METHODS[args.importance].needs_data
    tokenizer = _load_tokenizer(path, needed_for="--dataset" if needs_data else None)
    model = AutoModelForCausalLM.from_pretrained(path)
    scores = compute_importance(
        model,
        args.importance,
        args.dataset if needs_data else None,
        tokenizer,
        num_samples=args.num_samples or default_num_samples("quanto"),
        seq_len=args.seq_len,
        seed=args.seed,
    )
    print(format_layer_table(scores, None))
    if args.json_path:
        atomic_write_text(
            args.json_path, json.dumps({"model": args.model, "importance": args.importance, "scores": scores})
        )
    if args.plot:
        from ..formats.heatmap import plot_importance

        with atomic_file(args.plot) as staging:
            plot_importance(scores, staging, title=f"{args.importance} importance: {args.model}")
        print(f"heatmap written to {args.plot}")


def _quantize(args) -> None:
    from ..hf.config import LayerwiseQuantizationConfig

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
    model, tokenizer = _quantize_model(args, config)
    _print_result(model, model.config.quantization_config.plan)
    from ..model.offload import PackedLayerStore

    if args.format != "layerwise":
        _save_exported(model, tokenizer, output, args.format)
    else:
        _save_checkpoint(model, tokenizer, output)
    PackedLayerStore(config.work_dir).remove()
    print(f"saved to {args.output}" + (f" ({args.format})" if args.format != "layerwise" else ""))
    _push(model, tokenizer, args.push_to_hub)


def _save_checkpoint(model, tokenizer, output: Path) -> None:
    """Save the model and its tokenizer to `output` atomically (staged, then swapped in)."""
    from ..utils.atomic import atomic_folder

    with atomic_folder(output, keep_other_files=False) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)


def _push(model, tokenizer, repo_id: str | None) -> None:
    if repo_id:
        model.push_to_hub(repo_id)
        if tokenizer is not None:
            tokenizer.push_to_hub(repo_id)
        print(f"pushed to https://huggingface.co/{repo_id}")


def _slice(args) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from ..data.demo_models import resolve_model
    from ..hf.slicing_config import LayerwiseSlicingConfig
    from ..pipelines.slice import QUALITY_WORDING

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
    _check_not_quantized(path, args.model)
    config.tokenizer = _load_tokenizer(path)
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=config, dtype=dtype, device_map=args.device_map
    )
    plan = model.config.quantization_config.plan
    print(format_width_table(plan))
    print(f"mean sparsity: {plan.sparsity:.3f} over {len(plan.widths)} decoder layers (head: {plan.head_width})")
    print(f"parameters: {sum(parameter.numel() for parameter in model.parameters()):,}")
    _print_quality(plan.quality, *QUALITY_WORDING)
    _save_checkpoint(model, config.tokenizer, output)
    print(f"saved to {args.output}")
    _push(model, config.tokenizer, args.push_to_hub)


def format_width_table(plan) -> str:
    """A terminal table of a slicing plan's layers with their score, ratio and width."""
    lines = [f"{'layer':>5}  {'score':>10}  {'ratio':>6}  {'width':>5}"]
    for index, width in enumerate(plan.widths):
        score = f"{plan.scores[index]:10.5f}" if plan.scores is not None else f"{'-':>10}"
        lines.append(f"{index:>5}  {score}  {plan.ratios[index]:6.3f}  {width:>5}")
    return "\n".join(lines)


def _quantize_model(args, config):
    """Load the model named on the command line with `config` (which quantizes it); returns it and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..data.demo_models import resolve_model
    from ..importance import IMPORTANCE_METHODS

    path = resolve_model(args.model)
    _check_not_quantized(path, args.model)
    method = IMPORTANCE_METHODS.get(args.importance)
    measured = config.layer_costs is not None or config.unit_costs is not None
    calibrated = args.backend == "gptq" or args.optimizer == "imatrix"
    needs_text = calibrated or (method is not None and method.needs_data and not measured)
    tokenizer = _load_tokenizer(path, needed_for="--dataset" if needs_text else None)
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


def _print_result(model, plan) -> None:
    """The bit map, the sizes (with their basis) and the held-out quality of a freshly quantized model."""
    from ..model.footprint import describe_size

    print(format_layer_table(plan.layer_scores, plan.layer_bits))
    print(f"average bits: {plan.average_bits:.3f} over {len(plan.layer_bits)} decoder layers")
    print(f"model size: {describe_size(model)}; 1 MiB = 2**20 bytes")
    _print_quality(plan.quality)


def _print_quality(quality: dict | None, *wording: str) -> None:
    """The held-out check's line; `wording` as [`QualityCheck.summary`] takes it (default: quantization's)."""
    from ..model.perplexity import QualityCheck

    if quality is not None:
        print("quality: " + QualityCheck.from_dict(quality).summary(*wording))
    else:
        print("quality: not measured (no tokenizer to read calibration text)")


def read_checkpoint_summary(checkpoint: str) -> dict:
    """Plan and sizes of a saved layer-wise checkpoint (local folder or Hub repo), from config.json and the
    safetensors headers only.

    Raises:
        `CommandError`: when the folder or repo is not a readable layer-wise checkpoint, saying why.
    """
    from ..data.demo_models import could_be_hub_id
    from ..hf.config import layerwise_dict
    from ..hf.slicing_config import SLICING_METHOD
    from ..model.footprint import safetensors_tensor_bytes
    from ..plan.quantization_plan import QuantizationPlan, upgrade_saved_config

    folder = Path(checkpoint)
    if folder.is_dir():
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise CommandError(f"{checkpoint} has no config.json: not a saved model folder")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CommandError(f"{config_path} is not valid JSON: {error}") from None
        try:
            tensor_bytes = safetensors_tensor_bytes(folder)
        except ValueError as error:
            raise CommandError(str(error)) from None
    elif os.path.exists(checkpoint) or "/" not in checkpoint or not could_be_hub_id(checkpoint):
        raise CommandError(f"{checkpoint}: no such folder (and not a Hub repo id such as 'org/name')")
    else:
        config, tensor_bytes = _hub_checkpoint(checkpoint)
    saved = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(saved, dict):
        kind = "missing" if saved is None else f"a {type(saved).__name__}, not an object"
        raise CommandError(f"{checkpoint} is not a layer-wise checkpoint: its quantization_config is {kind}")
    if saved.get("quant_method") == SLICING_METHOD:
        return _slicing_summary(checkpoint, config, saved, sum(tensor_bytes.values()))
    quantization = layerwise_dict(saved)
    if quantization is None:
        raise CommandError(f"{checkpoint} is not a layer-wise checkpoint (quant_method={saved.get('quant_method')!r})")
    quantization = upgrade_saved_config(quantization)
    if quantization.get("plan") is None:
        raise CommandError(f"{checkpoint} has no layer-wise plan: it was not saved after quantization")
    try:
        plan = QuantizationPlan.from_dict(quantization["plan"])
    except ValueError as error:
        raise CommandError(f"{checkpoint}: {error}") from None
    layer_bits, scores = dict(plan.layer_bits), plan.layer_scores
    if not layer_bits:
        raise CommandError(f"{checkpoint} has no layer-wise bit map (plan.layer_bits is empty)")
    if scores is not None and len(scores) != len(layer_bits):
        raise CommandError(f"{checkpoint}: plan.layer_scores does not give one score per decoder layer")
    return {
        "checkpoint": checkpoint,
        "architecture": (config.get("architectures") or ["?"])[0],
        "backend": quantization.get("backend"),
        "bits": quantization.get("bits"),
        "group_size": quantization.get("group_size"),
        "importance": quantization.get("importance"),
        "layer_bits": layer_bits,
        "layer_scores": list(scores) if scores is not None else None,
        "layer_costs": quantization["plan"].get("layer_costs"),
        "unit_costs": quantization["plan"].get("unit_costs"),
        "granularity": plan.granularity,
        "budget": dict(plan.budget),
        "quality": quantization["plan"].get("quality"),
        "average_bits": plan.average_bits,
        "tensor_bytes": sum(tensor_bytes.values()),
    }


def _slicing_summary(checkpoint: str, config: dict, saved: dict, tensor_bytes: int) -> dict:
    """[`read_checkpoint_summary`] of a sliced checkpoint."""
    from ..plan.slicing_plan import SlicingPlan

    try:
        plan = SlicingPlan.from_dict(saved.get("plan") or {})
    except ValueError as error:
        raise CommandError(f"{checkpoint}: {error}") from None
    return {
        "checkpoint": checkpoint,
        "architecture": (config.get("architectures") or ["?"])[0],
        "method": "slicing",
        "importance": saved.get("importance"),
        "requested_sparsity": saved.get("sparsity"),
        "base": saved.get("base"),
        "sparsity": plan.sparsity,
        "hidden_size": plan.hidden_size,
        "widths": list(plan.widths),
        "head_width": plan.head_width,
        "ratios": list(plan.ratios),
        "scores": list(plan.scores) if plan.scores is not None else None,
        "quality": plan.quality,
        "tensor_bytes": tensor_bytes,
    }


def _hub_checkpoint(repo_id: str) -> tuple[dict, dict[str, int]]:
    from huggingface_hub import get_safetensors_metadata, hf_hub_download

    from ..model.footprint import safetensors_nbytes

    try:
        config = json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text())
        metadata = get_safetensors_metadata(repo_id)
    except Exception as error:  # network, auth and not-found errors all end the command the same way
        raise CommandError(
            f"cannot read {repo_id!r} as a local folder or from the Hub: {type(error).__name__}"
        ) from None
    tensor_bytes = {
        name: safetensors_nbytes(info.shape, info.dtype, f"{file_name}: {name}")
        for file_name, file_metadata in metadata.files_metadata.items()
        for name, info in file_metadata.tensors.items()
    }
    return config, tensor_bytes


def _inspect(args) -> None:
    summary = read_checkpoint_summary(args.checkpoint)
    if args.verify:
        from ..utils.checksums import verify_checksums

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
        from ..model.perplexity import QualityCheck

        print("quality: " + QualityCheck.from_dict(summary["quality"]).summary())
    print(f"tensors: {format_bytes(summary['tensor_bytes'])}")
    if summary.get("verified"):
        print("checksums: every tensor and config.json match the saved sha256 manifest")
    print(format_layer_table(summary["layer_scores"], summary["layer_bits"]))


def _print_slicing_summary(summary: dict) -> None:
    from ..pipelines.slice import QUALITY_WORDING
    from ..plan.slicing_plan import SlicingPlan

    base = summary["base"] if summary["base"] is not None else "sparsity / 2"
    print(
        f"sliced: importance {summary['importance']}, mean sparsity {summary['sparsity']:.3f} of "
        f"{summary['hidden_size']} channels (requested {summary['requested_sparsity']}, base {base})"
    )
    if summary["quality"]:
        _print_quality(summary["quality"], *QUALITY_WORDING)
    print(f"tensors: {format_bytes(summary['tensor_bytes'])}")
    if summary.get("verified"):
        print("checksums: every tensor and config.json match the saved sha256 manifest")
    plan = SlicingPlan(
        summary["hidden_size"], summary["widths"], summary["head_width"], summary["ratios"], summary["scores"]
    )
    print(format_width_table(plan))


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _load_for_evaluation(model: str):
    from transformers import AutoModelForCausalLM

    from ..data.demo_models import resolve_model

    path = resolve_model(model)
    return AutoModelForCausalLM.from_pretrained(path), _load_tokenizer(path)


def _evaluate(args) -> None:
    from ..evaluation.perplexity import perplexity

    model, tokenizer = _load_for_evaluation(args.model)
    result = perplexity(model, args.dataset, tokenizer, seq_len=args.seq_len, num_windows=args.windows)
    results: dict = {"perplexity": {args.dataset: result.to_dict()}}
    print(f"perplexity ({args.dataset}, {result.num_windows}x{args.seq_len} tokens): {result.perplexity:.3f}")
    if _split(args.tasks):
        from ..evaluation.tasks import evaluate_tasks

        results["tasks"] = evaluate_tasks(model, tokenizer, _split(args.tasks), limit=args.limit)
        for task, metrics in results["tasks"].items():
            print(f"{task}: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    if args.json_path:
        atomic_write_text(args.json_path, json.dumps({"model": args.model, **results}, indent=1))


def _sweep(args) -> None:
    from ..evaluation.sweep import SweepSettings, run_sweep, save_sweep

    if len(args.bits) != 2:
        raise CommandError(f"--bits for a sweep needs two levels (high,low), got {args.bits}")
    model, tokenizer = _load_for_evaluation(args.model)
    settings = SweepSettings(
        bits=args.bits,
        orderings=_split(args.orderings),
        random_seeds=args.seeds,
        step=args.step,
        calibration=args.calibration,
        num_samples=args.num_samples,
        evaluation=args.eval_dataset,
        eval_windows=args.windows,
        group_size=args.group_size,
        tasks=_split(args.tasks),
        task_limit=args.limit,
        pruning=_split(args.pruning),
    )
    rows = run_sweep(model, tokenizer, settings)
    files = save_sweep(
        rows, args.output, title=f"{args.model}: {args.bits[0]}->{args.bits[1]} bits, g{args.group_size}"
    )
    print((Path(args.output) / "memory.md").read_text())
    print("written: " + ", ".join(str(path) for path in files.values()))


def _save_exported(model, tokenizer, output: Path, format: str) -> None:
    """Write `model` (and `tokenizer`) to `output` in the export `format`, atomically."""
    from ..formats.export import export_model

    with tempfile.TemporaryDirectory() as folder:
        companions = []
        if tokenizer is not None:
            companions = [Path(path) for path in tokenizer.save_pretrained(folder) if Path(path).is_file()]
        export_model(model, output, format, companions)


def _lm_eval(args: argparse.Namespace) -> None:
    """lm-eval's own command line with `args.arguments`, after `import optimum_layerwise` registered the layer-wise
    format (stock `lm_eval` fails on `quant_method: layerwise` before anything of ours could be imported)."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        from ..evaluation.tasks import INSTALL_COMMAND

        raise CommandError(f"needs lm-eval: {INSTALL_COMMAND}") from None
    import optimum_layerwise  # noqa: F401  (registers quant_method "layerwise" with transformers)

    saved = sys.argv
    sys.argv = ["lm_eval", *args.arguments]
    try:
        cli_evaluate()
    except SystemExit as exit:
        if exit.code not in (None, 0):
            raise CommandError(f"lm_eval exited with {exit.code}") from None
    finally:
        sys.argv = saved


def _tasks(args: argparse.Namespace) -> None:
    from ..evaluation.tasks import PAPER_TASKS, write_task_configs
    from ..utils.atomic import atomic_folder

    output = check_output(args.output, overwrite=False, force=False)
    names = [name.strip() for name in args.tasks.split(",") if name.strip()] if args.tasks else PAPER_TASKS
    with atomic_folder(output, keep_other_files=False) as staging:
        written = write_task_configs(names, staging)
    print(f"wrote {len(written)} task files to {args.output}; pass `--include_path {args.output}` to lm_eval")


def _export(args: argparse.Namespace) -> None:
    from ..formats.export import export_checkpoint

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


COMMANDS = {
    "score": _score,
    "quantize": _quantize,
    "slice": _slice,
    "export": _export,
    "lm-eval": _lm_eval,
    "tasks": _tasks,
    "inspect": _inspect,
    "eval": _evaluate,
    "sweep": _sweep,
}


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
        COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"optimum-layerwise {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, ImportError, OSError, NotImplementedError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"optimum-layerwise {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
