"""Predicted and measured peak memory of each job: quantize in memory and layer by layer (quanto; GPT-Q when gptqmodel
is installed), slice, slice then quantize. Each job runs in a fresh process that first predicts its peak
(`predict_memory`, what `optimum-layerwise quantize --dry-run` prints), then loads the model with the job's config,
saves the result and reports its peak resident memory (`VmHWM`) and the peak of its anonymous memory (sampled).
The prediction must be an upper bound of the measured peak within 25 %.

With `--cap-check`, each job then runs twice more inside a memory cgroup (cgroup v1 or v2, needs root): capped 10 %
below its prediction (it must refuse before loading, in one line) and 10 % above (it must finish).

    python bench/memory.py --models smollm2-135m --cap-check
    .venv-gptq/bin/python bench/memory.py --models smollm2-135m --jobs quantize-gptq quantize-gptq-streaming
    python bench/memory.py --quick
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import common
import rss


UPPER_BOUND_SLACK = 1.25  # a prediction may exceed the measured peak by at most this factor
CAPS = {"below": 0.9, "above": 1.1}
SLICING = {"sparsity": 0.2, "dataset": "shakespeare", "num_samples": 32}  # 128 by default: 4x the walk
QUANTIZATION = {"bits": [4, 2], "target_bits": 3.0, "dataset": "shakespeare"}
JOBS = {
    "quantize-quanto": {"quantization": QUANTIZATION, "low_memory": False},
    "quantize-quanto-streaming": {"quantization": QUANTIZATION, "low_memory": True},
    "quantize-gptq": {"quantization": {**QUANTIZATION, "backend": "gptq", "num_samples": 16}, "low_memory": False},
    "quantize-gptq-streaming": {
        "quantization": {**QUANTIZATION, "backend": "gptq", "num_samples": 16},
        "low_memory": True,
    },
    "slice": {"slicing": SLICING},
    "slice+quantize": {"quantization": {**QUANTIZATION, "bits": [8, 4], "target_bits": 6.0}, "slicing": SLICING},
}
QUICK_CALIBRATION = {  # the tiny model has no tokenizer: token ids (16 windows of 64 tokens)
    "num_samples": 4,
    "seq_len": 64,
    "dataset": [[(7 * i + 3 * j) % 500 for j in range(64)] for i in range(16)],
}


def _config(job: dict, calibration: dict, tokenizer):
    from optimum_layerwise import LayerwiseQuantizationConfig, LayerwiseSlicingConfig

    slicing = None
    if "slicing" in job:
        slicing = LayerwiseSlicingConfig(**{**job["slicing"], **calibration}, tokenizer=tokenizer)
    if "quantization" not in job:
        return slicing
    return LayerwiseQuantizationConfig(
        **{**job["quantization"], **calibration},
        tokenizer=tokenizer,
        slicing=slicing,
        low_memory=job.get("low_memory"),
    )


def job_task(folder: str, job: str, calibration: dict, output: str) -> dict:
    """Child task: predict `job`'s peak on `folder`, run it (load with its config, save to `output`) and measure."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_layerwise.hf.memory import predict_memory
    from optimum_layerwise.utils.system_memory import process_memory_limit

    tokenizer = None if "dataset" in calibration else AutoTokenizer.from_pretrained(folder)
    config = _config(JOBS[job], calibration, tokenizer)
    result = {"start_rss": rss.rss_bytes(), "limit": process_memory_limit()}
    try:
        choice = predict_memory(folder, config)
    except MemoryError as error:
        result["prediction_refused"] = str(error)
    else:
        result.update(
            predicted=choice.estimate.peak_bytes, path=choice.estimate.path, parts=dict(choice.estimate.parts)
        )
    begin = time.perf_counter()
    with rss.RssSampler() as sampler:
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)
        except MemoryError as error:
            return {**result, "refused": str(error), "peak_at_refusal": rss.peak_rss_bytes()}
        model.save_pretrained(output)
    return {
        **result,
        "seconds": round(time.perf_counter() - begin, 1),
        "measured": rss.peak_rss_bytes(),
        "measured_anon": sampler.peaks["anon"],
    }


def _weights_bytes(folder: str) -> int:
    """Bytes of the model's weights in float32."""
    import torch
    from transformers import AutoConfig

    from optimum_layerwise.model.shape import ModelShape

    return ModelShape.from_config(AutoConfig.from_pretrained(folder), torch.float32).total_bytes


def _capped_run(folder: str, job: str, calibration: dict, workdir: Path, limit: int) -> dict:
    with rss.memory_cgroup(f"layerwise-bench-memory-{time.monotonic_ns()}", limit) as group:
        with tempfile.TemporaryDirectory(dir=workdir) as output:
            result = common.run_isolated(
                "memory", "job_task", cgroup=group, folder=folder, job=job, calibration=calibration, output=output
            )
        return {"limit": limit, **result, **rss.cgroup_peak(group)}


def measure_job(folder: str, job: str, calibration: dict, workdir: Path, cap_check: bool) -> dict:
    """`job` on `folder` uncapped (prediction against measurement), then under the caps of `CAPS` when asked."""
    with tempfile.TemporaryDirectory(dir=workdir) as output:
        row = common.run_isolated("memory", "job_task", folder=folder, job=job, calibration=calibration, output=output)
    row["ratio"] = row["predicted"] / row["measured"]
    row["upper_bound_within_slack"] = 1.0 <= row["ratio"] <= UPPER_BOUND_SLACK
    if cap_check:
        row["caps"] = {
            name: _capped_run(folder, job, calibration, workdir, int(row["predicted"] * factor))
            for name, factor in CAPS.items()
        }
        below, above = row["caps"]["below"], row["caps"]["above"]
        row["cap_check_passed"] = "refused" in below and "measured" in above
    return row


def available_jobs(requested: Sequence[str]) -> list[str]:
    """`requested` without the GPT-Q jobs when gptqmodel is not installed in this Python."""
    has_gptq = importlib.util.find_spec("gptqmodel") is not None
    return [job for job in requested if has_gptq or "gptq" not in job]


def measure_model(name: str, folder: str, workdir: Path, jobs: Sequence[str], quick: bool, cap_check: bool) -> dict:
    calibration = QUICK_CALIBRATION if quick else {}
    fp32 = _weights_bytes(folder)
    rows = {}
    for job in jobs:
        rows[job] = row = measure_job(folder, job, calibration, workdir, cap_check)
        row["measured_vs_fp32_weights"] = row["measured"] / fp32
        print(_line(name, job, row), flush=True)
    return {"fp32_weights_bytes": fp32, "calibration": calibration, "jobs": rows}


def _line(name: str, job: str, row: dict) -> str:
    mib = 2**20
    line = (
        f"{name} {job} ({row['path']}): predicted {row['predicted'] / mib:.0f} MiB, measured "
        f"{row['measured'] / mib:.0f} MiB (anon {row['measured_anon'] / mib:.0f}), ratio {row['ratio']:.3f}, "
        f"{row['seconds']} s"
    )
    if "caps" in row:
        line += f"; caps: {'ok' if row['cap_check_passed'] else 'FAILED'}"
    return line


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("memory", __doc__.split("\n\n")[0], models=["smollm2-135m"], repeats=None)
    parser.add_argument("--jobs", nargs="+", choices=list(JOBS), default=list(JOBS), help="default: all")
    parser.add_argument("--cap-check", action="store_true", help="also run each job capped 10%% below and above")
    args = common.start(parser, argv)
    common.FRESH_PROCESSES = True  # a peak is only the job's own in a fresh process, also with --quick
    jobs = available_jobs(args.jobs)
    return common.run_per_model(
        args,
        lambda name, folder, workdir: measure_model(name, folder, workdir, jobs, args.quick, args.cap_check),
        lambda name, result: [],
    )


if __name__ == "__main__":
    main()
