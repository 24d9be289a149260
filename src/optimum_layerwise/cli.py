"""`optimum-layerwise`: score layers, quantize a model, inspect a checkpoint from the terminal."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .demo_models import DEMO_MODEL


DEFAULT_CALIBRATION = "shakespeare"


class CommandError(Exception):
    """A user error reported as one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bits(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--bits must be comma-separated integers such as 4,2, got {value!r}"
        ) from None


def _group_size(value: str) -> int | None:
    if value.lower() in ("none", "per-channel"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--group-size must be an integer or 'none', got {value!r}") from None


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default=DEMO_MODEL,
        help=f"local folder, Hub id, or offline demo model name (default: {DEMO_MODEL})",
    )


def _add_calibration(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--importance",
        default="lim",
        help="lim, reverse_lim, zd, reverse_zd, random, depth, sensitivity or sensitivity_kl (default: lim)",
    )
    parser.add_argument(
        "--dataset",
        default=DEFAULT_CALIBRATION,
        help=f"calibration corpus name or text file (default: {DEFAULT_CALIBRATION})",
    )
    parser.add_argument("--num-samples", type=int, default=128, help="calibration windows (default: 128)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per calibration window (default: 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed of 'random' and of the calibration subset")


def build_parser() -> argparse.ArgumentParser:
    """The `optimum-layerwise` argument parser."""
    parser = _Parser(prog="optimum-layerwise", description="Variable layer-wise quantization of causal LMs.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info logs")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    score = commands.add_parser("score", help="importance score of every decoder layer")
    _add_model(score)
    _add_calibration(score)
    score.add_argument("--json", dest="json_path", help="also write the scores to this JSON file")
    score.add_argument("--plot", help="write a heatmap of the scores (PNG) like the paper's Figure 1")

    quantize = commands.add_parser("quantize", help="quantize a model with layer-wise bits and save it")
    _add_model(quantize)
    quantize.add_argument("--output", required=True, help="folder to write the quantized checkpoint to")
    quantize.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    quantize.add_argument("--bits", type=_bits, default=(4, 2), help="precision levels, high to low (default: 4,2)")
    budget = quantize.add_mutually_exclusive_group()
    budget.add_argument("--target-bits", type=float, help="average bits over decoder layers")
    budget.add_argument("--memory-budget", help="bytes for the whole model, e.g. 200MB or 1.5GiB")
    budget.add_argument("--num-low-bit-layers", type=int, help="number of layers at the lowest level")
    quantize.add_argument("--backend", default="quanto", help="quanto or gptq (default: quanto)")
    quantize.add_argument("--group-size", type=_group_size, default=128, help="group size or 'none' (default: 128)")
    quantize.add_argument("--desc-act", action="store_true", help="GPT-Q: quantize columns by decreasing activation")
    quantize.add_argument("--asym", action="store_true", help="GPT-Q: asymmetric zero-points (default: symmetric)")
    quantize.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    quantize.add_argument("--device-map", help="accelerate device map for loading, e.g. auto or cpu")
    quantize.add_argument("--push-to-hub", metavar="REPO", help="also upload the checkpoint to this Hub repo")
    quantize.add_argument(
        "--reuse-costs",
        metavar="CHECKPOINT",
        help="allocate by the layer_costs measured for a saved checkpoint of the same model (no new measurement)",
    )
    _add_calibration(quantize)

    evaluate = commands.add_parser("eval", help="perplexity on held-out text and zero-shot lm-eval tasks")
    _add_model(evaluate)
    evaluate.add_argument("--dataset", default="kjv", help="held-out corpus name or text file (default: kjv)")
    evaluate.add_argument("--windows", type=int, default=16, help="perplexity windows (default: 16)")
    evaluate.add_argument("--seq-len", type=int, default=512, help="tokens per window (default: 512)")
    evaluate.add_argument("--tasks", default="", help="comma-separated lm-eval tasks, e.g. piqa,arc_easy")
    evaluate.add_argument("--limit", type=int, default=100, help="examples per task (default: 100)")
    evaluate.add_argument("--json", dest="json_path", help="also write the results to this JSON file")

    sweep = commands.add_parser("sweep", help="quality vs average bits for each layer ordering (paper Fig. 2)")
    _add_model(sweep)
    sweep.add_argument("--output", required=True, help="folder for sweep.json, sweep.csv, sweep.png, memory.md")
    sweep.add_argument("--bits", type=_bits, default=(4, 2), help="high and low level (default: 4,2)")
    sweep.add_argument(
        "--orderings", default="lim,reverse_lim,zd,reverse_zd,sensitivity,random", help="comma-separated importances"
    )
    sweep.add_argument("--seeds", default="0,1,2", help="seeds of the random ordering (default: 0,1,2)")
    sweep.add_argument("--step", type=int, default=3, help="layers moved to the low level per point (default: 3)")
    sweep.add_argument("--group-size", type=_group_size, default=128)
    sweep.add_argument("--calibration", default="shakespeare", help="LIM calibration corpus (default: shakespeare)")
    sweep.add_argument("--num-samples", type=int, default=32, help="calibration windows (default: 32)")
    sweep.add_argument("--eval-dataset", default="kjv", help="held-out corpus (default: kjv)")
    sweep.add_argument("--windows", type=int, default=8, help="perplexity windows of 512 tokens (default: 8)")
    sweep.add_argument("--tasks", default="", help="comma-separated lm-eval tasks to run at every point")
    sweep.add_argument("--limit", type=int, default=100, help="examples per task (default: 100)")
    sweep.add_argument("--pruning", default="lim,depth", help="orderings for the pruning comparison ('' = none)")

    inspect = commands.add_parser(
        "inspect", help="bit map, scores and sizes of a saved checkpoint (no weights loaded)"
    )
    inspect.add_argument("checkpoint", help="folder or Hub repo id of a layer-wise checkpoint")
    inspect.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of a table")
    return parser


def _human(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def format_layer_table(scores: Sequence[float] | None, layer_bits: dict[int, int] | None) -> str:
    """A terminal table of layers with their score, rank and bits."""
    num_layers = len(scores) if scores is not None else len(layer_bits)
    rank = {}
    if scores is not None:
        rank = {
            index: position + 1 for position, index in enumerate(sorted(range(num_layers), key=lambda i: -scores[i]))
        }
    lines = [f"{'layer':>5}  {'score':>10}  {'rank':>4}  {'bits':>4}"]
    for index in range(num_layers):
        score = f"{scores[index]:10.5f}" if scores is not None else f"{'-':>10}"
        bits = str(layer_bits[index]) if layer_bits is not None else "-"
        lines.append(f"{index:>5}  {score}  {rank.get(index, '-'):>4}  {bits:>4}")
    return "\n".join(lines)


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise CommandError(f"--output {output} is a file, not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise CommandError(f"--output {output} is not empty; pass --overwrite to replace it")
    parent = output.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise CommandError(f"--output {output} is not writable: {error.strerror or error}") from None


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _score(args) -> None:
    from transformers import AutoModelForCausalLM

    from .demo_models import resolve_model
    from .importance import compute_importance

    path = resolve_model(args.model)
    model = AutoModelForCausalLM.from_pretrained(path)
    scores = compute_importance(
        model,
        args.importance,
        args.dataset,
        _load_tokenizer(path),
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        seed=args.seed,
    )
    print(format_layer_table(scores, None))
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps({"model": args.model, "importance": args.importance, "scores": scores})
        )
    if args.plot:
        from .evaluation.plots import plot_importance

        plot_importance(scores, args.plot, title=f"{args.importance} importance: {args.model}")
        print(f"heatmap written to {args.plot}")


def _quantize(args) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from .config import LayerwiseQuantizationConfig
    from .demo_models import resolve_model
    from .footprint import full_precision_nbytes, tensor_nbytes
    from .plan import average_bits

    output = Path(args.output)
    _check_output(output, args.overwrite)
    layer_costs = None
    if args.reuse_costs:
        layer_costs = read_checkpoint_summary(args.reuse_costs)["layer_costs"]
        if not layer_costs:
            raise CommandError(f"--reuse-costs {args.reuse_costs} has no measured layer_costs")
    path = resolve_model(args.model)
    tokenizer = _load_tokenizer(path)
    config = LayerwiseQuantizationConfig(
        bits=args.bits,
        backend=args.backend,
        target_bits=args.target_bits,
        memory_budget=args.memory_budget,
        num_low_bit_layers=args.num_low_bit_layers,
        importance=args.importance,
        dataset=args.dataset,
        tokenizer=tokenizer,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        group_size=args.group_size,
        seed=args.seed,
        layer_costs=layer_costs,
        sym=not args.asym,
        desc_act=args.desc_act,
    )
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=config, dtype=dtype, device_map=args.device_map
    )
    plan = model.config.quantization_config
    print(format_layer_table(plan.layer_scores, plan.layer_bits))
    before, after = full_precision_nbytes(model), tensor_nbytes(model)
    print(f"average bits: {average_bits(plan.layer_bits):.3f} over {len(plan.layer_bits)} decoder layers")
    print(f"model size: {_human(before)} -> {_human(after)} ({after / before:.1%})")
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.resolve().parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"saved to {output}")
    if args.push_to_hub:
        model.push_to_hub(args.push_to_hub)
        tokenizer.push_to_hub(args.push_to_hub)
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")


def read_checkpoint_summary(checkpoint: str) -> dict:
    """Plan and sizes of a saved layer-wise checkpoint (local folder or Hub repo), from config.json and the
    safetensors headers only."""
    from .config import layerwise_dict
    from .footprint import safetensors_tensor_bytes

    folder = Path(checkpoint)
    if folder.is_dir():
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise CommandError(f"{checkpoint} has no config.json: not a saved model folder")
        config = json.loads(config_path.read_text())
        tensor_bytes = safetensors_tensor_bytes(folder)
    else:
        config, tensor_bytes = _hub_checkpoint(checkpoint)
    saved = config.get("quantization_config") or {}
    quantization = layerwise_dict(saved)
    if quantization is None:
        raise CommandError(f"{checkpoint} is not a layer-wise checkpoint (quant_method={saved.get('quant_method')!r})")
    layer_bits = {int(k): v for k, v in (quantization.get("layer_bits") or {}).items()}
    return {
        "checkpoint": checkpoint,
        "architecture": (config.get("architectures") or ["?"])[0],
        "backend": quantization.get("backend"),
        "bits": quantization.get("bits"),
        "group_size": quantization.get("group_size"),
        "importance": quantization.get("importance"),
        "layer_bits": layer_bits,
        "layer_scores": quantization.get("layer_scores"),
        "layer_costs": quantization.get("layer_costs"),
        "average_bits": sum(layer_bits.values()) / len(layer_bits) if layer_bits else None,
        "tensor_bytes": sum(tensor_bytes.values()),
    }


def _hub_checkpoint(repo_id: str) -> tuple[dict, dict[str, int]]:
    import math

    from huggingface_hub import get_safetensors_metadata, hf_hub_download

    from .footprint import SAFETENSORS_DTYPE_BYTES

    try:
        config = json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text())
        metadata = get_safetensors_metadata(repo_id)
    except Exception as error:  # network, auth and not-found errors all end the command the same way
        raise CommandError(
            f"cannot read {repo_id!r} as a local folder or from the Hub: {type(error).__name__}"
        ) from None
    tensor_bytes = {
        name: math.prod(info.shape) * SAFETENSORS_DTYPE_BYTES[info.dtype]
        for file_metadata in metadata.files_metadata.values()
        for name, info in file_metadata.tensors.items()
    }
    return config, tensor_bytes


def _inspect(args) -> None:
    summary = read_checkpoint_summary(args.checkpoint)
    if args.as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"checkpoint: {summary['checkpoint']} ({summary['architecture']})")
    print(f"backend: {summary['backend']}  bits: {summary['bits']}  group size: {summary['group_size']}")
    print(f"importance: {summary['importance']}  average bits: {summary['average_bits']:.3f}")
    print(f"tensors: {_human(summary['tensor_bytes'])}")
    print(format_layer_table(summary["layer_scores"], summary["layer_bits"]))


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _load_for_evaluation(model: str):
    from transformers import AutoModelForCausalLM

    from .demo_models import resolve_model

    path = resolve_model(model)
    return AutoModelForCausalLM.from_pretrained(path), _load_tokenizer(path)


def _evaluate(args) -> None:
    from .evaluation.perplexity import perplexity

    model, tokenizer = _load_for_evaluation(args.model)
    result = perplexity(model, args.dataset, tokenizer, seq_len=args.seq_len, num_windows=args.windows)
    results: dict = {"perplexity": {args.dataset: result.to_dict()}}
    print(f"perplexity ({args.dataset}, {result.num_windows}x{args.seq_len} tokens): {result.perplexity:.3f}")
    if _split(args.tasks):
        from .evaluation.tasks import evaluate_tasks

        results["tasks"] = evaluate_tasks(model, tokenizer, _split(args.tasks), limit=args.limit)
        for task, metrics in results["tasks"].items():
            print(f"{task}: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"model": args.model, **results}, indent=1))


def _sweep(args) -> None:
    from .evaluation.sweep import SweepSettings, run_sweep, save_sweep

    if len(args.bits) != 2:
        raise CommandError(f"--bits for a sweep needs two levels (high,low), got {args.bits}")
    model, tokenizer = _load_for_evaluation(args.model)
    settings = SweepSettings(
        bits=args.bits,
        orderings=_split(args.orderings),
        random_seeds=[int(seed) for seed in _split(args.seeds)],
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


COMMANDS = {
    "score": _score,
    "quantize": _quantize,
    "inspect": _inspect,
    "eval": _evaluate,
    "sweep": _sweep,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    from transformers.utils import logging

    if args.quiet:
        logging.set_verbosity_error()
        logging.disable_progress_bar()
    try:
        COMMANDS[args.command](args)
    except (CommandError, ValueError, ImportError, OSError, NotImplementedError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"optimum-layerwise {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
