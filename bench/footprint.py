"""Footprint of mixed 4/2-bit models: resident bytes and size on disk vs the theoretical bytes of the bit map, over the
paper's Table 4 schedule (0, 10%, ..., 90% of the decoder layers at 2 bits, least important by ZD first).

Theory is computed here from first principles, not by the library: per quantized Linear `out·in·bits/8` bytes of codes
plus a float scale and shift per group of `g` weights (`g` from quanto's group-size rule), plus every tensor that stays
unquantized (embeddings, lm_head, norms, biases) at its dtype; in memory also the non-persistent buffers (rotary
`inv_freq`), which are not saved. Goal: measured within 2% of theory, and savings that track the average bits
linearly. Each mixed model is quantized on load and saved in one process, then loaded from its checkpoint in a fresh
process; after every tensor is read once (the files are memory-mapped), that process's RSS (freed memory trimmed,
minus an import-only process) is the resident size. Loading any model adds a constant to that RSS (modules imported,
allocator state): a control, the unquantized model loaded the same way, measures it (`process_overhead_bytes`), and
`resident_rss_net` subtracts it. A one-token forward then shows what the kernels cache (TinyGemm copies).

    python bench/footprint.py --models smollm2-135m qwen2.5-coder-0.5b
    python bench/footprint.py --quick
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import common
import rss


GOAL_PCT = 2.0
SCHEDULE = tuple(step / 10 for step in range(10))  # share of layers at 2 bits (paper Table 4)
QUICK_SCHEDULE = (0.0, 0.5)
COMPARED = ("loaded_model_bytes", "resident_rss", "resident_rss_net", "disk_file")


def theoretical_bytes(config, dtype: str, layer_bits: dict[int, int], group_size: int) -> dict[str, int]:
    """Bytes of `layer_bits` for the architecture `config` (a transformers config), from a meta-device model:
    quantized Linear weights (codes + scale and shift per group, or per channel for 8 bits), the rest at `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM

    from optimum_layerwise.model.layers import decoder_layers, linear_modules
    from optimum_layerwise.plan import effective_group_size

    float_bytes = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    unquantized = sum(p.numel() for p in model.parameters()) * float_bytes  # tied weights counted once
    total = unquantized
    for index, layer in enumerate(decoder_layers(model)):
        bits = layer_bits[index]
        for linear in linear_modules(layer).values():
            weights = linear.out_features * linear.in_features
            group = None if bits == 8 else effective_group_size(linear.in_features, group_size)
            groups = weights // group if group else linear.out_features
            scale_tensors = 1 if bits == 8 else 2  # int8: symmetric, scale only
            total += math.ceil(weights * bits / 8) + scale_tensors * groups * float_bytes - weights * float_bytes
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())  # e.g. rotary inv_freq: memory, not disk
    return {"total": total, "buffers": buffers, "unquantized_model": unquantized}


def resident_task(folder: str, dtype: str) -> dict:
    """Child task: load a checkpoint and read every tensor once ([`rss.touch_tensors`]: untouched pages of the
    memory-mapped files are not resident); live RSS before and after reading, then after a one-token forward."""
    import torch
    from transformers import AutoModelForCausalLM

    import optimum_layerwise  # noqa: F401  (registers the quantizer)

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    after_load = rss.live_rss_bytes()
    rss.touch_tensors(model)
    all_pages = rss.live_rss_bytes()
    with torch.no_grad():
        model(torch.zeros((1, 1), dtype=torch.long))
    return {
        "live_rss_after_load": after_load,
        "live_rss_all_pages": all_pages,
        "live_rss_after_forward": rss.live_rss_bytes(),
        "model_bytes": rss.model_nbytes(model),
        "kernel_cache_bytes": rss.cached_kernel_nbytes(model),
    }


def disk_bytes(folder: Path) -> dict[str, int]:
    """Safetensors file sizes (with headers) and the tensor bytes their headers declare."""
    from optimum_layerwise.model.footprint import safetensors_tensor_bytes

    return {
        "files": sum(path.stat().st_size for path in folder.glob("*.safetensors")),
        "tensors": sum(safetensors_tensor_bytes(folder).values()),
    }


def deviation_pct(measured: int, theory: int) -> float:
    """`100 * (measured - theory) / theory`."""
    return 100 * (measured - theory) / theory


def control(folder: str, dtype: str, workdir: Path, baseline: dict) -> dict:
    """The unquantized model saved in `dtype` and loaded like the mixed ones: RSS beyond its tensor bytes is the
    constant every load adds."""
    output = workdir / "unquantized"
    common.run_isolated("common", "save_plain", folder=folder, dtype=dtype, output=str(output))
    resident = common.run_isolated("footprint", "resident_task", folder=str(output), dtype=dtype)
    shutil.rmtree(output)
    rss = resident["live_rss_all_pages"] - baseline["live_rss"]
    return {
        "model_bytes": resident["model_bytes"],
        "resident_rss_bytes": rss,
        "process_overhead_bytes": rss - resident["model_bytes"],
    }


def measure_point(folder: str, dtype: str, low: int, workdir: Path, baseline: dict, overhead: int) -> dict:
    """Quantize with `low` layers at 2 bits, save, load in a fresh process; every size vs theory."""
    from transformers import AutoConfig

    from optimum_layerwise.plan import average_bits

    output = workdir / f"mixed-{low}"
    quantized = common.run_isolated(
        "common", "quantize_and_save", folder=folder, dtype=dtype, num_low_bit_layers=low, output=str(output)
    )
    quant_config = json.loads((output / "config.json").read_text())["quantization_config"]
    layer_bits = {int(index): bits for index, bits in quant_config["plan"]["layer_bits"].items()}
    theory = theoretical_bytes(AutoConfig.from_pretrained(folder), dtype, layer_bits, quant_config["group_size"])
    resident = common.run_isolated("footprint", "resident_task", folder=str(output), dtype=dtype)
    disk = disk_bytes(output)
    shutil.rmtree(output)
    in_memory = theory["total"] + theory["buffers"]
    measured = {
        "loaded_model_bytes": resident["model_bytes"],
        "resident_rss": resident["live_rss_all_pages"] - baseline["live_rss"],
        "resident_rss_net": resident["live_rss_all_pages"] - baseline["live_rss"] - overhead,
        "disk_file": disk["files"],
    }
    return {
        "low_bit_layers": low,
        "share_low": low / len(layer_bits),
        "avg_bits": average_bits(layer_bits),
        "theory_bytes": theory["total"],
        "theory_buffer_bytes": theory["buffers"],
        "unquantized_bytes": theory["unquantized_model"],
        "quantized_model_bytes": quantized["model_bytes"],
        "loaded_model_bytes": resident["model_bytes"],
        "resident_rss_bytes": measured["resident_rss"],
        "resident_rss_net_bytes": measured["resident_rss_net"],
        "resident_rss_before_reading_bytes": resident["live_rss_after_load"] - baseline["live_rss"],
        "resident_rss_after_forward_bytes": resident["live_rss_after_forward"] - baseline["live_rss"],
        "kernel_cache_bytes": resident["kernel_cache_bytes"],
        "disk_file_bytes": disk["files"],
        "disk_tensor_bytes": disk["tensors"],
        "deviation_pct": {
            key: deviation_pct(value, theory["total"] if key == "disk_file" else in_memory)
            for key, value in measured.items()
        },
        "saving_vs_unquantized": 1 - resident["model_bytes"] / theory["unquantized_model"],
    }


def measure(folder: str, dtype: str, schedule: Sequence[float], workdir: Path) -> dict:
    """Every point of the schedule on one model, with the baseline and the control."""
    layers = common.num_layers(folder)
    baseline = common.run_isolated("rss", "baseline_process")
    unquantized = control(folder, dtype, workdir, baseline)
    points = [
        measure_point(folder, dtype, low, workdir, baseline, unquantized["process_overhead_bytes"])
        for low in sorted({round(share * layers) for share in schedule})
    ]
    avg_bits = [point["avg_bits"] for point in points]
    worst = {key: max(abs(point["deviation_pct"][key]) for point in points) for key in COMPARED}
    return {
        "dtype": dtype,
        "num_layers": layers,
        "baseline_live_rss": baseline["live_rss"],
        "control_unquantized": unquantized,
        "points": points,
        "bytes_vs_avg_bits_fit": {
            key: common.linear_fit(avg_bits, [point[f"{key}_bytes"] for point in points])
            for key in ("loaded_model", "resident_rss_net", "disk_file")
        }
        if len(points) > 1
        else None,
        "worst_abs_deviation_pct": worst,
        "goal_pct": GOAL_PCT,
        "goal_met": {key: value <= GOAL_PCT for key, value in worst.items()},
    }


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("footprint", __doc__.split("\n\n")[0], repeats=None)
    parser.add_argument("--dtype", choices=common.DTYPES, default="bfloat16", help="default: bfloat16 (deployment)")
    args = common.start(parser, argv)
    schedule = QUICK_SCHEDULE if args.quick else SCHEDULE

    def report(name: str, result: dict) -> list[str]:
        return [
            f"{name} {point['low_bit_layers']:>2} layers at 2 bits ({point['avg_bits']:.2f} avg bits): theory "
            f"{point['theory_bytes'] / 1e6:.1f} MB, loaded {point['loaded_model_bytes'] / 1e6:.1f} MB, RSS "
            f"{point['resident_rss_bytes'] / 1e6:.1f} MB (net {point['resident_rss_net_bytes'] / 1e6:.1f} MB), "
            f"disk {point['disk_file_bytes'] / 1e6:.1f} MB"
            for point in result["points"]
        ]

    return common.run_per_model(
        args, lambda _, folder, workdir: measure(folder, args.dtype, schedule, workdir), report
    )


if __name__ == "__main__":
    main()
