"""Dynamic vs constant slicing, and slicing against the other ways to shrink a model: parameters, forward-pass time
against the unsliced model (side by side, rounds interleaved), perplexity on held-out text the rotation never saw and,
with `--tasks`, lm-eval accuracies.

Every sliced variant is sliced on load with `LayerwiseSlicingConfig` from the same calibration windows (Shakespeare,
the offline calibration corpus); perplexity is measured on another corpus (`--eval-dataset`, default KJV). Two
comparisons at equal size follow:

- **layer removal** to the parameter count of each constant-ratio slice: the layers with the lowest LIM score (same
  calibration windows) are removed until the model has no more parameters than the sliced one;
- **at equal bytes**, layer-wise quantization (the package's defaults) at `--quantize-bits` average bits, against
  slicing by `--slice-then-quantize` sparsities and then quantizing to the same bytes (`memory_budget`), with the
  shortcut matrices kept in full precision and quantized with their layers (`quantize_shortcuts=True`).

Bytes are those of the saved safetensors files. Each variant runs in a fresh process; its line is printed when it
finishes, and the result file is rewritten after every variant.

    python bench/slicing.py --models smollm2-135m --sparsities 0.1 0.2 0.3 --bases default 0 --tasks piqa arc_easy
    python bench/slicing.py --quick
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import footprint


def forward_s(model, prompt) -> float:
    """Seconds of one forward pass over `prompt` (no cache)."""
    import torch

    with torch.no_grad():
        return common.timed(lambda: model(prompt, use_cache=False))[0]


def saved_bytes(model) -> int:
    """Bytes of the safetensors files `save_pretrained` writes for `model`."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return footprint.disk_bytes(Path(folder))["files"]


class Setup:
    """The model, data and evaluation shared by every variant of one model (rebuilt in each child process)."""

    def __init__(self, name: str, folder: str, settings: dict[str, Any]):
        import torch
        from transformers import AutoTokenizer

        self.name, self.folder, self.settings = name, folder, settings
        self.tiny = name == common.TINY
        self.tokenizer = None if self.tiny else AutoTokenizer.from_pretrained(folder)
        generator = torch.Generator().manual_seed(1)
        vocab, seq_len = common.tiny_config().vocab_size, settings["seq_len"]
        self.calibration = (
            torch.randint(0, vocab, (64, seq_len), generator=generator).tolist() if self.tiny else "shakespeare"
        )
        self.held_out = (
            torch.randint(0, vocab, (8, seq_len), generator=generator).tolist()
            if self.tiny
            else settings["eval_dataset"]
        )

    def load(self, config=None):
        """The checkpoint in float32, transformed on load by `config` (if any)."""
        import torch
        from transformers import AutoModelForCausalLM

        kwargs = {} if config is None else {"quantization_config": config}
        return AutoModelForCausalLM.from_pretrained(self.folder, dtype=torch.float32, **kwargs).eval()

    def data(self) -> dict[str, Any]:
        """Calibration arguments of the configs."""
        return {
            "dataset": self.calibration,
            "tokenizer": self.tokenizer,
            "num_samples": self.settings["num_samples"],
            "seq_len": self.settings["seq_len"],
        }

    def slicing_config(self, importance: str, sparsity: float, base: float | None = None):
        from optimum_layerwise import LayerwiseSlicingConfig

        return LayerwiseSlicingConfig(
            sparsity=sparsity, importance=importance, base=base, quality_windows=0, **self.data()
        )

    def evaluate(self, model, tasks: bool = True) -> dict[str, Any]:
        """Held-out perplexity, parameters and saved bytes of `model`; lm-eval accuracies when tasks were asked."""
        from optimum_layerwise.evaluation.perplexity import perplexity

        settings = self.settings
        row = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "saved_bytes": saved_bytes(model),
            "perplexity": perplexity(
                model,
                self.held_out,
                self.tokenizer,
                seq_len=settings["seq_len"],
                num_windows=settings["eval_windows"],
                prepend_bos=False if self.tiny else None,  # the tiny model has no tokenizer
            ).perplexity,
        }
        if tasks and settings["tasks"] and not self.tiny:
            from optimum_layerwise.evaluation.tasks import evaluate_tasks

            scores = evaluate_tasks(model, self.tokenizer, settings["tasks"], limit=settings["task_limit"])
            row["tasks"] = {task: {"acc": s["acc"], "acc_stderr": s["acc_stderr"]} for task, s in scores.items()}
        return row

    def timed_against_original(self, model) -> dict[str, Any]:
        """Forward-pass seconds of `model` and its ratio to the unsliced model, measured interleaved."""
        original = self.load()
        prompt = common.prompt_ids(self.name, self.folder, self.settings["prompt_tokens"])
        forward_s(model, prompt[:, :16])  # warm-up
        runs = common.interleave(
            {"variant": lambda: forward_s(model, prompt), "unsliced": lambda: forward_s(original, prompt)},
            self.settings["repeats"],
        )
        return {
            "forward_s": common.summarize(runs["variant"]),
            "forward_ratio": common.ratio_summary(runs["variant"], runs["unsliced"]),
        }


def reference_task(name: str, folder: str, settings: dict[str, Any]) -> dict:
    """Child task: the unsliced model."""
    setup = Setup(name, folder, settings)
    return setup.evaluate(setup.load())


def slice_task(name: str, folder: str, settings: dict[str, Any], importance: str, sparsity: float, base) -> dict:
    """Child task: slice on load, then measure against the unsliced model."""
    setup = Setup(name, folder, settings)
    config = setup.slicing_config(importance, sparsity, base)
    slice_s, model = common.timed(lambda: setup.load(config))
    plan = model.config.quantization_config.plan
    return {
        "kind": "slice",
        "importance": importance,
        "sparsity": sparsity,
        "base": config.slicing_base(),
        "achieved_sparsity": plan.sparsity,
        "widths": list(plan.widths),
        "slice_s": slice_s,
        **setup.timed_against_original(model),
        **setup.evaluate(model),
    }


def removal_task(name: str, folder: str, settings: dict[str, Any], max_parameters: int) -> dict:
    """Child task: remove the decoder layers of lowest LIM score until at most `max_parameters` remain."""
    from optimum_layerwise.data.calibration import calibration_batches
    from optimum_layerwise.evaluation.sweep import pruned
    from optimum_layerwise.importance.lim import lim_scores
    from optimum_layerwise.model.layers import decoder_layers

    setup = Setup(name, folder, settings)
    model = setup.load()
    data = setup.data()
    batches = calibration_batches(
        data["dataset"], data["tokenizer"], num_samples=data["num_samples"], seq_len=data["seq_len"]
    )
    scores = lim_scores(model, batches)
    layers = decoder_layers(model)
    keep = list(range(len(layers)))
    parameters = sum(p.numel() for p in model.parameters())
    for index in sorted(keep, key=lambda i: scores[i]):
        if parameters <= max_parameters:
            break
        keep.remove(index)
        parameters -= sum(p.numel() for p in layers[index].parameters())
    with pruned(model, keep):
        return {
            "kind": "removal",
            "layers_removed": sorted(set(range(len(layers))) - set(keep)),
            "lim_scores": scores,
            **setup.timed_against_original(model),
            **setup.evaluate(model),
        }


def quantize_task(
    name: str, folder: str, settings: dict[str, Any], target_bits: float | None, memory_budget: int | None,
    sparsity: float | None, quantize_shortcuts: bool = False,
) -> dict:  # fmt: skip
    """Child task: layer-wise quantization at `target_bits` or `memory_budget`, after LIM slicing at `sparsity` (its
    shortcuts quantized with their layers when `quantize_shortcuts`)."""
    from optimum_layerwise import LayerwiseQuantizationConfig

    setup = Setup(name, folder, settings)
    slicing = None if sparsity is None else setup.slicing_config("lim", sparsity)
    config = LayerwiseQuantizationConfig(
        target_bits=target_bits, memory_budget=memory_budget, slicing=slicing,
        quantize_shortcuts=quantize_shortcuts, **setup.data(),
    )  # fmt: skip
    row = {
        "kind": "quantize" if sparsity is None else "slice+quantize",
        "sparsity": sparsity,
        "quantize_shortcuts": quantize_shortcuts,
        "target_bits": target_bits,
        "memory_budget": memory_budget,
    }
    try:
        seconds, model = common.timed(lambda: setup.load(config))
    except ValueError as error:  # the budget is out of reach of the sliced model (e.g. full-precision shortcuts)
        return {**row, "error": str(error)}
    measured = setup.evaluate(model, tasks=False)
    del measured["parameters"]  # packed tensors: their element counts are not the model's parameters
    return {
        **row,
        "average_bits": model.config.quantization_config.plan.average_bits,
        "quantize_s": seconds,
        **measured,
    }


def report_line(variant: str, row: dict, reference: dict) -> str:
    """One printed line per variant."""
    if "error" in row:
        return f"  {variant:>22}: {row['error']}"
    parts = [f"  {variant:>22}: bytes x{row['saved_bytes'] / reference['saved_bytes']:.3f}"]
    if "parameters" in row:
        parts.append(f"parameters x{row['parameters'] / reference['parameters']:.3f}")
    if "forward_ratio" in row:
        parts.append(f"forward x{row['forward_ratio']['median']:.3f}")
    parts.append(f"perplexity {row['perplexity']:.2f} (x{row['perplexity'] / reference['perplexity']:.3f})")
    parts.extend(f"{task} {score['acc']:.3f}" for task, score in row.get("tasks", {}).items())
    return ", ".join(parts)


def variants(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The sliced variants: `(name, arguments of slice_task)`."""
    chosen = []
    for importance in args.importances:
        for sparsity in args.sparsities:
            for base in args.bases if importance != "constant" else [None]:
                label = f"{importance}-{sparsity}" + (f"-base{base}" if base is not None else "")
                chosen.append((label, {"importance": importance, "sparsity": sparsity, "base": base}))
    return chosen


def main(argv: Sequence[str] | None = None):
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("slicing", __doc__.split("\n\n")[0], models=("smollm2-135m",))
    parser.add_argument(
        "--sparsities", type=float, nargs="*", default=[0.1, 0.2, 0.3], help="none: only the equal-bytes rows"
    )
    parser.add_argument("--importances", nargs="+", default=["constant", "lim"])
    parser.add_argument(
        "--bases",
        type=lambda value: None if value == "default" else float(value),
        nargs="+",
        default=[None],
        help="slicing bases of the importance-based variants ('default': sparsity / 2)",
    )
    parser.add_argument("--num-samples", type=int, default=128, help="calibration windows (default: 128)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per window (default: 256)")
    parser.add_argument("--eval-dataset", default="kjv", help="held-out corpus (default: kjv)")
    parser.add_argument("--eval-windows", type=int, default=16, help="held-out windows (default: 16)")
    parser.add_argument("--prompt-tokens", type=int, default=512, help="tokens of the timed forward (default: 512)")
    parser.add_argument("--tasks", nargs="*", default=[], help="lm-eval tasks of the float variants (default: none)")
    parser.add_argument("--task-limit", type=int, default=200, help="examples per task (default: 200)")
    parser.add_argument("--no-removal", dest="removal", action="store_false", help="skip the layer-removal rows")
    parser.add_argument(
        "--quantize-bits", type=float, help="average bits of the equal-bytes comparison (default: none)"
    )
    parser.add_argument(
        "--slice-then-quantize", type=float, nargs="*", default=[0.1], help="sparsities sliced before quantizing"
    )
    args = common.start(parser, argv)
    if args.quick:
        args.sparsities, args.num_samples, args.seq_len, args.eval_windows, args.prompt_tokens = [0.25], 16, 32, 4, 32
        args.quantize_bits = args.quantize_bits or 6.0
    settings = {
        key: getattr(args, key)
        for key in ("num_samples", "seq_len", "eval_dataset", "eval_windows", "prompt_tokens", "repeats", "tasks")
    } | {"task_limit": args.task_limit}
    results: dict[str, Any] = {}

    def run(model: str, folder: str, label: str, task: str, **kwargs) -> dict:
        row = common.run_isolated(
            "slicing", task, timeout=6 * 3600, name=model, folder=folder, settings=settings, **kwargs
        )
        results[model]["variants"][label] = row
        print(report_line(label, row, results[model]), flush=True)
        common.write_results(args, results)
        return row

    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            workdir = Path(tmp) / model
            workdir.mkdir()
            folder = common.model_folder(model, workdir)
            reference = common.run_isolated("slicing", "reference_task", name=model, folder=folder, settings=settings)
            results[model] = {**reference, "variants": {}}
            print(f"{model}: {reference['parameters']:,} parameters, perplexity {reference['perplexity']:.2f}")
            for label, kwargs in variants(args):
                row = run(model, folder, label, "slice_task", **kwargs)
                if args.removal and kwargs["importance"] == "constant":
                    run(
                        model,
                        folder,
                        f"removal-{kwargs['sparsity']}",
                        "removal_task",
                        max_parameters=row["parameters"],
                    )
            if args.quantize_bits is not None:
                quantized = run(
                    model, folder, f"quantize-{args.quantize_bits}", "quantize_task",
                    target_bits=args.quantize_bits, memory_budget=None, sparsity=None,
                )  # fmt: skip
                for sparsity in args.slice_then_quantize:
                    for shortcuts in (False, True):
                        run(
                            model, folder, f"slice{sparsity}+quantize" + ("-shortcuts" if shortcuts else ""),
                            "quantize_task", target_bits=None, memory_budget=quantized["saved_bytes"],
                            sparsity=sparsity, quantize_shortcuts=shortcuts,
                        )  # fmt: skip
    return common.write_results(args, results)


if __name__ == "__main__":
    main()
