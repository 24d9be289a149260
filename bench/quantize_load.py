"""Quantize-on-load: time and peak RSS of `from_pretrained(quantization_config=LayerwiseQuantizationConfig(...))` vs
loading the same model unquantized and vs transformers' uniform `QuantoConfig(weights="int4")`.

Goal: peak RSS ≤ 1.25x the full-precision model's bytes (layer by layer, originals freed). Every load runs in a fresh
process (so its peak RSS, `VmHWM`, is that load's peak); a process that only imports the same libraries gives the RSS
floor, which is subtracted. A sampling thread splits the peak into anonymous memory (heap: cannot be reclaimed) and
file-backed pages (the memory-mapped checkpoint: the kernel can drop them under pressure). A load is
`DTYPE:SOURCE`: the model dtype and the dtype of the checkpoint it is read from (a bf16 copy of the float32 demo
checkpoint is saved first when needed; Hub checkpoints of these models are bf16). The layer-wise model is 4/2 bits
with half of the layers at 2 bits, ordered by ZD (no calibration data, so scoring cost does not blur the load cost;
LIM's cost is `bench/scoring.py`).

    python bench/quantize_load.py --models smollm2-135m --repeats 2
    python bench/quantize_load.py --quick
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import common
import rss


GOAL = 1.25
VARIANTS = ("plain", "layerwise", "quanto-int4")
LOADS = ("float32:float32", "bfloat16:bfloat16", "bfloat16:float32")
PEAKS = (
    "peak_rss_after_load",
    "peak_rss_after_forward",
    "live_rss_after_load",
    "sampled_peak_anon",
    "sampled_peak_file",
)


def load_task(folder: str, dtype: str, variant: str) -> dict:
    """Child task: load `folder` as `variant`, then run one 8-token forward (touches every weight). For the layer-wise
    load, the peak RSS reached before `quantize_model` starts (i.e. while transformers loads the weights) and the
    time `quantize_model` takes (scoring + packing) are recorded too."""
    import torch

    from optimum_layerwise.hf import quantizer

    marks: dict[str, float] = {}
    quantize_model = quantizer.quantize_model

    def traced_quantize_model(*args, **kwargs):
        marks["peak_rss_before_quantize"] = rss.peak_rss_bytes()
        marks["rss_before_quantize"] = rss.rss_bytes()
        marks["quantize_s"], result = common.timed(lambda: quantize_model(*args, **kwargs))
        return result

    quantizer.quantize_model = traced_quantize_model
    try:
        with rss.RssSampler() as sampler:
            load_s, model = common.timed(
                lambda: common.load_model(
                    folder, dtype, None if variant == "plain" else variant, common.num_layers(folder) // 2
                )
            )
    finally:
        quantizer.quantize_model = quantize_model
    peak_after_load = rss.peak_rss_bytes()
    live_after_load = rss.live_rss_bytes()
    with torch.no_grad():
        model(torch.arange(8).unsqueeze(0))
    return {
        "load_s": load_s,
        **marks,
        "peak_rss_after_load": peak_after_load,
        "sampled_peak_anon": sampler.peaks["anon"],
        "sampled_peak_file": sampler.peaks["file"],
        "live_rss_after_load": live_after_load,
        "peak_rss_after_forward": rss.peak_rss_bytes(),
        "model_bytes": rss.model_nbytes(model),
    }


def summarize_variant(runs: list[dict], plain_runs: list[dict], baseline: dict, full_precision: int) -> dict:
    """Load time (median, and ratio to the plain load round by round), the highest of every RSS mark over the runs,
    and the peaks over the floor relative to the full-precision model's bytes."""
    row: dict = {
        "load_s": common.summarize([run["load_s"] for run in runs]),
        "load_s_vs_plain": common.ratio_summary(
            [run["load_s"] for run in runs], [run["load_s"] for run in plain_runs]
        ),
        **{key: max(run[key] for run in runs) for key in PEAKS},
        "model_bytes": runs[0]["model_bytes"],
    }
    if "quantize_s" in runs[0]:
        row["quantize_s"] = common.summarize([run["quantize_s"] for run in runs])
        row["peak_rss_before_quantize"] = max(run["peak_rss_before_quantize"] for run in runs)
        row["rss_before_quantize"] = max(run["rss_before_quantize"] for run in runs)
    row["peak_over_baseline_vs_full_precision"] = (row["peak_rss_after_load"] - baseline["peak_rss"]) / full_precision
    row["anon_peak_over_baseline_vs_full_precision"] = (row["sampled_peak_anon"] - baseline["anon"]) / full_precision
    return row


def measure(folder: str, dtype: str, repeats: int, baseline: dict) -> dict:
    """All variants of one model loaded from `folder` in `dtype`, each load in a fresh process, rounds interleaved."""
    runs = common.interleave(
        {
            variant: lambda variant=variant: common.run_isolated(
                "quantize_load", "load_task", folder=folder, dtype=dtype, variant=variant
            )
            for variant in VARIANTS
        },
        repeats,
    )
    full_precision = runs["plain"][0]["model_bytes"]
    variants = {
        variant: summarize_variant(measured, runs["plain"], baseline, full_precision)
        for variant, measured in runs.items()
    }
    ratio = variants["layerwise"]["peak_over_baseline_vs_full_precision"]
    return {
        "dtype": dtype,
        "full_precision_bytes": full_precision,
        "variants": variants,
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
    }


def measure_model(name: str, folder: str, workdir: Path, loads: Sequence[str], repeats: int) -> dict:
    """The floor process, a bf16 copy of the checkpoint when a load reads one, then every load of one model."""
    results: dict = {"baseline": common.run_isolated("rss", "baseline_process")}
    sources = {"float32": folder}
    if any(load.endswith(":bfloat16") for load in loads):
        sources["bfloat16"] = str(workdir / "bf16")
        common.run_isolated("common", "save_plain", folder=folder, dtype="bfloat16", output=sources["bfloat16"])
    for load in loads:
        dtype, source = load.split(":")
        results[load] = measure(sources[source], dtype, repeats, results["baseline"])
    return results


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("quantize_load", __doc__.split("\n\n")[0], repeats=2)
    parser.add_argument("--loads", nargs="+", default=list(LOADS), help="DTYPE:SOURCE pairs (default: all three)")
    args = common.start(parser, argv)
    if args.quick:
        args.loads = ["float32:float32"]

    def report(name: str, result: dict) -> list[str]:
        return [
            f"{name} {load} {variant}: load {row['load_s']['median']:.1f} s, peak RSS "
            f"{row['peak_rss_after_load'] / 1e6:.0f} MB, (peak - floor) / fp bytes "
            f"{row['peak_over_baseline_vs_full_precision']:.2f}"
            for load in args.loads
            for variant, row in result[load]["variants"].items()
        ]

    return common.run_per_model(
        args, lambda name, folder, workdir: measure_model(name, folder, workdir, args.loads, args.repeats), report
    )


if __name__ == "__main__":
    main()
