"""The frontier: held-out perplexity against bits per weight counted from the saved files, for our quantizations
(granularities × backends × budgets, and uniform baselines) and llama.cpp's types, on the same token windows.

Each of our points is a real quantization through `from_pretrained(quantization_config=...)`, saved with
`save_pretrained`; its bits per weight are read from the saved safetensors headers: `linear_bpw` counts every byte of
the decoder layers' quantized Linear modules (codes, scales, zero-points) over their weights, `file_bpw` every byte of
the checkpoint over all parameters of the model. The costs measured for one granularity are reused for its other
budgets (`layer_costs` / `unit_costs`), as a user planning several sizes would. llama.cpp's rows come from
`bench/llama_cpp.py` (run it first), measured with the same windows and the same bpw rule.

    python bench/llama_cpp.py --model smollm2-135m
    python bench/frontier.py --models smollm2-135m --llama-cpp bench/results/llama_cpp-smollm2-135m.json
    python bench/frontier.py --quick
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import common


TARGETS = (4.25, 4.5, 5.0, 5.5, 6.0, 7.0)
UNIFORM = (4, 8)
EVALUATION = {"dataset": "kjv", "seq_len": 512, "num_windows": 16}
CALIBRATION = "shakespeare"
COMPARED = (4.0, 4.5, 5.0, 5.5, 6.0, 6.5)
LEVELS = {"quanto": (8, 4, 2), "gptq": (8, 4, 3, 2)}
MEASURED = ("sensitivity", "sensitivity_kl")


# --- bits per weight from the files --------------------------------------------------------------------------------


def bits_per_weight(folder: Path, linear_weights: dict[str, int], num_parameters: int) -> dict[str, float]:
    """`linear_bpw` over the quantized Linear modules `linear_weights` (`{module name: number of weights}`) and
    `file_bpw` over all `num_parameters`, from the saved tensors of `folder` (biases excluded from the former)."""
    from optimum_layerwise.model.footprint import safetensors_tensor_bytes

    sizes = safetensors_tensor_bytes(folder)
    linear = sum(
        size
        for name, size in sizes.items()
        if name.rpartition(".")[0] in linear_weights and not name.endswith(".bias")
    )
    return {
        "linear_bpw": 8 * linear / sum(linear_weights.values()),
        "file_bpw": 8 * sum(sizes.values()) / num_parameters,
    }


# --- curves --------------------------------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The `(bpw, perplexity)` points no other point beats on both, by increasing bpw."""
    front: list[tuple[float, float]] = []
    for bpw, ppl in sorted(points):
        if not front or ppl < front[-1][1]:
            front.append((bpw, ppl))
    return front


def interpolate(front: Sequence[tuple[float, float]], bpw: float) -> float | None:
    """Perplexity of a front at `bpw`: linear between its points, or, beyond its largest bpw, its best perplexity (a
    larger budget can always hold the best point); `None` below its smallest bpw."""
    if not front or bpw < front[0][0]:
        return None
    for (x0, y0), (x1, y1) in zip(front, front[1:]):
        if x0 <= bpw <= x1:
            return y0 + (y1 - y0) * (bpw - x0) / (x1 - x0)
    return front[-1][1]


def comparison(rows: Sequence[dict[str, Any]], ours: str, theirs: str, at: Sequence[float]) -> list[dict[str, Any]]:
    """Our best front against theirs at each bpw of `at`: rows whose `system` starts with `ours` / equals `theirs`."""

    def front(select) -> list[tuple[float, float]]:
        return pareto_front([(row["linear_bpw"], row["perplexity"]) for row in rows if select(row["system"])])

    mine, other = front(lambda s: s.startswith(ours)), front(lambda s: s == theirs)
    table = []
    for bpw in at:
        a, b = interpolate(mine, bpw), interpolate(other, bpw)
        table.append({"bpw": bpw, ours: a, theirs: b, "ratio": a / b if a is not None and b is not None else None})
    return table


# --- our quantizations ---------------------------------------------------------------------------------------------


def grid(
    backends: Sequence[str],
    optimizers: Sequence[str],
    granularities: Sequence[str],
    targets: Sequence[float],
    importances: Sequence[str] = ("sensitivity",),
    bits: Sequence[int] | None = None,
    uniform: Sequence[int] = UNIFORM,
) -> list[dict[str, Any]]:
    """Every quantization to run: each backend's levels (`bits`, default `LEVELS`; quanto with each of `optimizers`)
    at every granularity and target for each of `importances` (orders other than the measured ones only per layer,
    the paper's allocation), then the models at each of the `uniform` bit widths."""
    quantizers = [(b, o) for b in backends for o in (optimizers if b == "quanto" else ["max"])]
    points = [
        {
            "backend": b,
            "optimizer": o,
            "importance": importance,
            "granularity": granularity,
            "bits": tuple(bits or LEVELS[b]),
            "target_bits": target,
        }
        for b, o in quantizers
        for importance in importances
        for granularity in granularities
        if importance in MEASURED or granularity == "layer"
        for target in targets
    ]
    points += [
        {"backend": b, "optimizer": o, "importance": "sensitivity", "granularity": "uniform", "uniform": width}
        for b, o in quantizers
        for width in uniform
    ]
    return points


def system_name(point: dict[str, Any]) -> str:
    """`ours/<quantizer>/<granularity>`, suffixed with the importance when it is not `sensitivity`."""
    suffix = "" if point["importance"] == "sensitivity" or "uniform" in point else f"-{point['importance']}"
    return f"ours/{quantizer_name(point)}/{point['granularity']}{suffix}"


def quantizer_name(point: dict[str, Any]) -> str:
    """`quanto`, `quanto-<optimizer>` (`quanto-hqq`, `quanto-imatrix`) or `gptq`."""
    return point["backend"] + ("" if point["optimizer"] == "max" else f"-{point['optimizer']}")


def quantization_config(
    point: dict[str, Any], calibration: dict[str, Any], num_layers: int, costs: dict | None, group_size: int
):
    """The `LayerwiseQuantizationConfig` of one grid point (`calibration`: its `dataset` and `tokenizer`), reusing
    measured `costs` when given."""
    from optimum_layerwise import LayerwiseQuantizationConfig

    common_arguments = {
        "backend": point["backend"],
        "group_size": group_size,
        **calibration,
        "quality_windows": 0,  # the frontier scores every model on its own held-out windows
        "num_samples": 32 if point["backend"] == "gptq" else 8,
        **({"optimizer": point["optimizer"]} if point["backend"] == "quanto" else {}),
    }
    if "uniform" in point:
        return LayerwiseQuantizationConfig(
            bits=(8, 4), layer_bits=dict.fromkeys(range(num_layers), point["uniform"]), **common_arguments
        )
    measured = {}
    if costs is not None:
        measured = {"layer_costs": costs} if point["granularity"] == "layer" else {"unit_costs": costs}
    return LayerwiseQuantizationConfig(
        bits=point["bits"],
        target_bits=point["target_bits"],
        granularity=point["granularity"],
        importance=point["importance"],
        **measured,
        **common_arguments,
    )


def run_point(
    point: dict[str, Any],
    folder: str,
    workdir: Path,
    windows: tuple,
    reference: dict,
    calibration: dict[str, Any],
    costs: dict,
) -> dict[str, Any]:
    """Quantize, save, count bits and score one grid point; record the measured costs for the next budgets."""
    import torch
    from transformers import AutoModelForCausalLM

    from optimum_layerwise.model.perplexity import score_windows

    key = (quantizer_name(point), point["granularity"], point["importance"], point.get("bits"))
    config = quantization_config(point, calibration, reference["num_layers"], costs.get(key), reference["group_size"])
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config, dtype=torch.float32)
    quantize_s = time.perf_counter() - start
    plan = model.config.quantization_config.plan
    if plan.layer_costs is not None or plan.unit_costs is not None:
        costs[key] = dict(plan.layer_costs if point["granularity"] == "layer" else plan.unit_costs)
    saved = workdir / "point"
    model.save_pretrained(saved)
    sizes = bits_per_weight(saved, reference["linear_weights"], reference["num_parameters"])
    shutil.rmtree(saved)
    result = score_windows(model, *windows, desc="Held-out perplexity")
    return {
        "system": system_name(point),
        "target_bits": point.get("target_bits", point.get("uniform")),
        "bits": list(point.get("bits", [point.get("uniform")])),
        **sizes,
        "perplexity": result.perplexity,
        "quantize_s": round(quantize_s, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def reference_model(folder: str, windows: tuple, group_size: int) -> dict[str, Any]:
    """The unquantized model's perplexity, parameter count and the weights of every Linear we quantize."""
    import torch
    from transformers import AutoModelForCausalLM

    from optimum_layerwise.model.layers import decoder_layers_path, quantizable_linears
    from optimum_layerwise.model.perplexity import score_windows

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    path = decoder_layers_path(model)
    linear_weights = {
        f"{path}.{index}.{name}": linear.weight.numel()
        for index, _, linears in quantizable_linears(model, [])
        for name, linear in linears.items()
    }
    unique = {id(p): p.numel() for p in model.parameters()}
    result = score_windows(model, *windows, desc="Held-out perplexity (unquantized)")
    return {
        "perplexity": result.perplexity,
        "num_tokens": result.num_tokens,
        "num_parameters": sum(unique.values()),
        "num_layers": len(model.get_submodule(path)),
        "linear_weights": linear_weights,
        "group_size": group_size,
    }


def evaluation(name: str, folder: str) -> tuple[tuple, dict[str, Any]]:
    """`((windows, context), calibration)`: the held-out KJV windows and Shakespeare (with the tokenizer) for a demo
    model; seeded random token ids for the tiny one."""
    import torch
    from transformers import AutoTokenizer

    from optimum_layerwise.evaluation.perplexity import evaluation_windows

    if name == common.TINY:
        ids = torch.randint(0, 512, (12, 65), generator=torch.Generator().manual_seed(0)).tolist()
        return (ids[:4], 0), {"dataset": ids[4:]}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    windows = evaluation_windows(
        EVALUATION["dataset"], tokenizer, seq_len=EVALUATION["seq_len"], num_windows=EVALUATION["num_windows"]
    )
    return windows, {"dataset": CALIBRATION, "tokenizer": tokenizer}


def measure_model(
    name: str, folder: str, workdir: Path, args, save: Callable[[dict[str, Any]], Any]
) -> dict[str, Any]:
    """The unquantized reference, every grid point, the llama.cpp rows and the comparisons of one model; `save` is
    called with the rows measured so far after each point (a long run that stops keeps its points)."""
    windows, calibration = evaluation(name, folder)
    reference = reference_model(folder, windows, args.group_size)
    print(f"{name}: unquantized perplexity {reference['perplexity']:.3f}", flush=True)
    rows, costs = [], {}
    points = grid(
        args.backends, args.optimizers, args.granularities, args.targets, args.importances, args.bits, args.uniform
    )
    for point in points:
        row = run_point(point, folder, workdir, windows, reference, calibration, costs)
        rows.append(row)
        save({"unquantized_perplexity": reference["perplexity"], "rows": rows, "complete": False})
        print(
            f"{name} {row['system']} {row['target_bits']}: linear {row['linear_bpw']:.3f} bpw, file "
            f"{row['file_bpw']:.3f} bpw, ppl {row['perplexity']:.3f} ({row['seconds']} s)",
            flush=True,
        )
    results = {
        "evaluation": {**EVALUATION, "num_tokens": reference["num_tokens"]} if name != common.TINY else "random ids",
        "calibration": CALIBRATION if name != common.TINY else "random ids",
        "group_size": args.group_size,
        **curves(rows, reference["perplexity"], args.llama_cpp),
    }
    if args.plot:
        plot(results, name, plot_path(args, name))
    return results


def curves(rows: list[dict[str, Any]], unquantized: float, llama_cpp: Path | None) -> dict[str, Any]:
    """Our `rows` with llama.cpp's (from its result file, if given): each system's Pareto front, our best front and
    module granularity against llama.cpp's and layer granularity's at `COMPARED` bpw, and every system's point at
    each target (orders are compared at equal targets)."""
    if llama_cpp:
        rows = rows + [
            {**row, "system": "llama.cpp" + ("+imatrix" if row.get("imatrix") else "")}
            for row in json.loads(Path(llama_cpp).read_text())["rows"]
            if row.get("perplexity") is not None and row["system"] == "llama.cpp"
        ]
    fronts = {
        system: pareto_front([(r["linear_bpw"], r["perplexity"]) for r in rows if r["system"] == system])
        for system in sorted({row["system"] for row in rows})
    }
    by_target: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["system"].startswith("ours/") and not row["system"].endswith("/uniform"):
            by_target.setdefault(str(row["target_bits"]), {})[row["system"]] = [row["linear_bpw"], row["perplexity"]]
    return {
        "unquantized_perplexity": unquantized,
        "rows": rows,
        "fronts": fronts,
        "vs_llama_cpp": comparison(rows, "ours", "llama.cpp", COMPARED) if llama_cpp else None,
        "module_vs_layer": comparison(rows, "ours/quanto/module", "ours/quanto/layer", COMPARED),
        "by_target": by_target,
    }


def merge(args) -> dict[str, Any]:
    """The curves of `args.models` from the rows of several result files (`args.merge`): grids run in pieces, or on
    different environments (GPT-Q), drawn together. Each row keeps the command that measured it."""
    payloads = [json.loads(Path(path).read_text()) for path in args.merge]
    results = {}
    for name in args.models:
        parts = [(payload["command"], payload["results"][name]) for payload in payloads if name in payload["results"]]
        if not parts:
            raise SystemExit(f"--merge: no result file holds model {name!r}.")
        references = {round(part["unquantized_perplexity"], 6) for _, part in parts}
        if len(references) > 1:
            raise SystemExit(f"--merge: the files of {name!r} disagree on the unquantized perplexity: {references}.")
        rows = [
            {**row, "command": command}
            for command, part in parts
            for row in part["rows"]
            if row["system"].startswith("ours/")
        ]
        results[name] = curves(rows, parts[0][1]["unquantized_perplexity"], args.llama_cpp)
        if args.plot:
            plot(results[name], name, plot_path(args, name))
    return results


def plot_path(args, name: str) -> Path:
    """`--plot`, suffixed with the model's name when there are several."""
    return args.plot if len(args.models) == 1 else args.plot.with_stem(f"{args.plot.stem}-{name}")


def plot(results: dict[str, Any], name: str, path: Path) -> None:
    """Perplexity against linear-layer bpw: every point, and each system's Pareto front as a line."""
    from optimum_layerwise.formats.heatmap import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 5), layout="constrained")
    for system, front in results["fronts"].items():
        points = [(r["linear_bpw"], r["perplexity"]) for r in results["rows"] if r["system"] == system]
        line = axis.plot(*zip(*front), marker="o", label=system)[0]
        axis.scatter(*zip(*points), s=12, color=line.get_color(), alpha=0.5)
    axis.axhline(results["unquantized_perplexity"], color="gray", linestyle=":", label="unquantized")
    axis.set_xlabel("bits per weight of the decoder layers' Linear modules (from the files)")
    axis.set_ylabel("held-out perplexity")
    axis.set_title(f"{name}: quality per byte")
    axis.legend(fontsize=8)
    from optimum_layerwise.utils.atomic import atomic_file

    with atomic_file(path) as staging:
        figure.savefig(staging, dpi=120, format="png")
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("frontier", __doc__.split("\n\n")[0], repeats=None)
    parser.add_argument("--backends", nargs="+", default=["quanto"], choices=["quanto", "gptq"])
    parser.add_argument("--optimizers", nargs="+", default=["max"], choices=["max", "hqq", "imatrix"], help="quanto's")
    parser.add_argument(
        "--granularities", nargs="+", default=["layer", "module"], choices=["layer", "block", "module"]
    )
    parser.add_argument("--targets", nargs="+", type=float, default=list(TARGETS), help="target average bits")
    parser.add_argument(
        "--importances", nargs="+", default=["sensitivity"], help="sensitivity, or orders compared per layer"
    )
    parser.add_argument("--bits", nargs="+", type=int, help=f"levels (default per backend: {LEVELS})")
    parser.add_argument(
        "--uniform", nargs="*", type=int, default=list(UNIFORM), help="uniform bit widths (none: no baseline)"
    )
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--llama-cpp", type=Path, help="result JSON of bench/llama_cpp.py for the same model")
    parser.add_argument("--plot", type=Path, help="PNG of the curves (one per model, suffixed, for several models)")
    parser.add_argument(
        "--merge", nargs="+", type=Path, help="no quantization: the curves of these result files' rows"
    )
    args = common.start(parser, argv)
    if args.quick:
        args.targets, args.group_size = [4.5], 32

    def report(name: str, result: dict) -> list[str]:
        lines = [f"{name} fronts: {json.dumps(result['fronts'])}"]
        for title in ("vs_llama_cpp", "module_vs_layer"):
            for row in result[title] or []:
                lines.append(f"{name} {title} at {row['bpw']} bpw: {row}")
        return lines

    if args.merge:
        return common.write_results(args, merge(args))
    finished: dict[str, Any] = {}

    def measure(name: str, folder: str, workdir: Path) -> dict[str, Any]:
        finished[name] = measure_model(
            name, folder, workdir, args, lambda partial: common.write_results(args, {**finished, name: partial})
        )
        return finished[name]

    return common.run_per_model(args, measure, report)


if __name__ == "__main__":
    main()
