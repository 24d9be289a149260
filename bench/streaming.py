"""Low-memory quantization of models larger than the memory given: peak anonymous and file-backed memory, and time, of
`from_pretrained(..., quantization_config=LayerwiseQuantizationConfig(low_memory=True, ...))` then `save_pretrained`
on synthetic checkpoints with Llama-2-7B-sized decoder layers (hidden 4096, intermediate 11008, random bfloat16
weights, vocabulary 32,000) at three depths, each run in a fresh process inside a memory cgroup capped below the size
of the deepest checkpoint. What a 70B job needs is predicted from the per-layer slope.

The acceptance bound of every depth: peak anonymous memory while quantizing (over the floor of a process that has
imported everything) at most 1.1 x (two decoder layers' weights in the compute dtype + embeddings and head + the
calibration hidden states), the same at every depth.

    python bench/streaming.py --depths 4 8 19 --cap 5GiB                       # quanto, LIM (about 8.2 GB at 19)
    .venv-gptq/bin/python bench/streaming.py --backend gptq --depths 19 --cap 5GiB
    .venv-gptq/bin/python bench/streaming.py --backend gptq --hidden-size 2048 --intermediate-size 5504 \
        --depths 19 --cap 2GiB
    python bench/streaming.py --quick

With `--workdir DIR` the checkpoints, the quantization's work folders and each finished depth's result are kept in
DIR: rerunning the same command after an interruption (a killed job, a session that ended) resumes the interrupted
quantization from its finished layers and skips the depths already measured. The time per layer is then read from
the times the layers were written, not from the resumed attempt's wall time.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import common
import rss

from optimum_layerwise.utils.units import parse_memory


LAYER_SHAPE = {"hidden_size": 4096, "intermediate_size": 11008}  # Llama-2-7B
LLAMA_70B_LAYER = {"hidden_size": 8192, "intermediate_size": 28672, "kv_heads": 8, "num_layers": 80}
QUICK_SHAPE = {"hidden_size": 256, "intermediate_size": 512}


def layer_parameters(hidden_size: int, intermediate_size: int, kv_heads: int | None = None, **_) -> int:
    """Weights of one decoder layer of the Llama built by `common.synthetic_llama_config` (counted on the meta
    device)."""
    import torch
    from transformers import AutoModelForCausalLM

    from optimum_layerwise.model.layers import decoder_layers

    config = common.synthetic_llama_config(
        hidden_size, 1, vocab_size=8, intermediate_size=intermediate_size, kv_heads=kv_heads
    )
    with torch.device("meta"):
        return sum(p.numel() for p in decoder_layers(AutoModelForCausalLM.from_config(config))[0].parameters())


def write_synthetic_checkpoint(folder: Path, depth: int, shape: dict, vocab_size: int, seed: int = 0) -> int:
    """Write a random bfloat16 Llama checkpoint of `depth` layers to `folder`, one safetensors shard per decoder layer,
    never holding more than one layer in memory (shards of a deeper checkpoint in the same parent are linked, not
    written again). Returns its bytes on disk."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    config = common.synthetic_llama_config(
        shape["hidden_size"], depth, vocab_size=vocab_size, intermediate_size=shape["intermediate_size"]
    )
    with torch.device("meta"):
        names = {name: tensor.shape for name, tensor in AutoModelForCausalLM.from_config(config).state_dict().items()}
    shared = folder.parent / "shards"
    shared.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    by_shard: dict[str, list[str]] = {}
    for name in names:
        shard = f"layer-{int(name.split('.')[2]):05d}" if name.startswith("model.layers.") else "outside-layers"
        by_shard.setdefault(f"{shard}.safetensors", []).append(name)
    for number, (shard, members) in enumerate(sorted(by_shard.items())):
        target = shared / f"{shard.removesuffix('.safetensors')}-{shape['hidden_size']}.safetensors"
        if not target.is_file():
            generator = torch.Generator().manual_seed(seed + number)
            tensors = {
                name: torch.ones(names[name])
                if name.endswith("norm.weight")
                else 0.02 * torch.randn(names[name], generator=generator)
                for name in members
            }
            tensors = {name: tensor.to(torch.bfloat16) for name, tensor in tensors.items()}
            save_file(tensors, str(target), metadata={"format": "pt"})
        link = folder / shard
        if not link.exists():
            link.symlink_to(target)
    weight_map = {name: shard for shard, members in by_shard.items() for name in members}
    size = sum((folder / shard).stat().st_size for shard in by_shard)
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    config.dtype = "bfloat16"
    config.save_pretrained(folder)
    return size


def quantize_task(
    folder: str,
    output: str,
    work_dir: str,
    backend: str,
    importance: str,
    dtype: str,
    num_samples: int,
    seq_len: int,
    quality_windows: int,
) -> dict:
    """Child task: low-memory quantize-on-load of `folder`, save to `output`, reload that with `device_map="auto"` and
    run one window; time and memory of each phase, and when each quantized layer was written to `work_dir` (seconds
    after this task started; negative for layers an interrupted attempt had already finished)."""
    import torch
    from transformers import AutoModelForCausalLM

    from optimum_layerwise import LayerwiseQuantizationConfig

    vocab = json.loads((Path(folder) / "config.json").read_text())["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    windows = torch.randint(0, vocab, (num_samples + quality_windows, seq_len), generator=generator).tolist()
    options = {"optimizer": "max"} if backend == "quanto" else {}
    config = LayerwiseQuantizationConfig(
        bits=(8, 4), target_bits=6.0, backend=backend, importance=importance, dataset=windows, seq_len=seq_len,
        num_samples=num_samples, quality_windows=quality_windows, low_memory=True, work_dir=work_dir, **options,
    )  # fmt: skip
    started = time.time()
    with rss.RssSampler(interval=0.02) as quantizing:
        quantize_s, model = common.timed(
            lambda: AutoModelForCausalLM.from_pretrained(
                folder, quantization_config=config, dtype=getattr(torch, dtype)
            )
        )
    after_quantizing = rss.peak_rss_bytes()
    layers_written = sorted(path.stat().st_mtime - started for path in Path(work_dir).glob("layer-*.safetensors"))
    with rss.RssSampler(interval=0.02) as saving:
        save_s, _ = common.timed(lambda: model.save_pretrained(output))
    plan = model.config.quantization_config.plan
    model = None  # the quantized model is dropped before the reload
    rss.live_rss_bytes()  # collect and trim: the reload starts from the floor
    with rss.RssSampler(interval=0.02) as reloading:
        reload_s, reloaded = common.timed(lambda: AutoModelForCausalLM.from_pretrained(output, device_map="auto"))
        with torch.no_grad():
            logits = reloaded(torch.tensor([windows[-1]])).logits
    return {
        "reload_s": reload_s,
        "reload_peak": reloading.peaks,
        "reload_devices": sorted({str(tensor.device) for tensor in reloaded.parameters()}),
        "reload_logits_finite": bool(torch.isfinite(logits).all()),
        "quantize_s": quantize_s,
        "layers_written_s": layers_written,
        "layers_resumed": sum(seconds < 0 for seconds in layers_written),
        "save_s": save_s,
        "quantize_peak": quantizing.peaks,
        "save_peak": saving.peaks,
        "vm_hwm_after_quantizing": after_quantizing,
        "vm_hwm": rss.peak_rss_bytes(),
        "average_bits": plan.average_bits,
        "quality": dict(plan.quality),
        "output_bytes": sum(path.stat().st_size for path in Path(output).glob("*.safetensors")),
    }


def seconds_per_layer(layers_written_s: Sequence[float]) -> float:
    """Median gap between consecutive layers written by the same attempt (gaps across a resume are left out)."""
    gaps = [b - a for a, b in zip(layers_written_s, layers_written_s[1:]) if (a < 0) == (b < 0)]
    return statistics.median(gaps)


def bound_bytes(shape: dict, vocab_size: int, dtype_bytes: int, num_samples: int, seq_len: int) -> dict[str, int]:
    """The acceptance bound's parts: two decoder layers, embeddings and head, calibration hidden states (the inputs
    and outputs of one layer for every window, in float32)."""
    parts = {
        "two_layers": 2 * layer_parameters(**shape) * dtype_bytes,
        "embeddings_and_head": 2 * vocab_size * shape["hidden_size"] * dtype_bytes,
        "activations": 2 * num_samples * seq_len * shape["hidden_size"] * 4,
    }
    return {**parts, "bound": int(1.1 * sum(parts.values()))}


def seventy_b(per_layer_s: float, shape: dict, dtype_bytes: int, num_samples: int, seq_len: int) -> dict:
    """A Llama-2-70B job in the same dtype and settings, from the per-layer slope: time scaled by parameters per
    layer, memory by the same bound."""
    ratio = layer_parameters(**LLAMA_70B_LAYER) / layer_parameters(**shape)
    bound = bound_bytes(LLAMA_70B_LAYER, 32000, dtype_bytes, num_samples, seq_len)
    return {
        "layer_parameter_ratio": ratio,
        "predicted_hours": per_layer_s * ratio * LLAMA_70B_LAYER["num_layers"] / 3600,
        "predicted_peak_anon_over_floor": bound["bound"],
        "checkpoint_bytes_bf16": 2 * (80 * layer_parameters(**LLAMA_70B_LAYER) + 2 * 32000 * 8192),
    }


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("streaming", __doc__.split("\n\n")[0], models=None, repeats=None)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 19])
    parser.add_argument("--cap", type=parse_memory, help="memory cgroup limit, e.g. 5GiB (needs root)")
    parser.add_argument("--hidden-size", type=int, default=LAYER_SHAPE["hidden_size"])
    parser.add_argument("--intermediate-size", type=int, default=LAYER_SHAPE["intermediate_size"])
    parser.add_argument("--backend", choices=("quanto", "gptq"), default="quanto")
    parser.add_argument("--importance", default="lim")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--quality-windows", type=int, default=2)
    parser.add_argument(
        "--workdir",
        type=Path,
        help="a folder kept between runs: checkpoints, work folders, finished results (default: a temporary folder)",
    )
    args = common.start(parser, argv)
    shape = {"hidden_size": args.hidden_size, "intermediate_size": args.intermediate_size}
    shape, vocab = (QUICK_SHAPE, 512) if args.quick else (shape, 32000)
    if args.quick:
        args.depths, args.seq_len = [2, 3, 4], 32
    dtype_bytes = 4 if args.dtype == "float32" else 2
    runs = {}
    kept = args.workdir is not None
    if kept:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(args.workdir) if kept else tempfile.TemporaryDirectory() as tmp:
        floor = common.run_isolated("rss", "baseline_process")
        for depth in sorted(args.depths):
            finished = Path(tmp) / f"result-{depth}.json"
            if kept and finished.is_file():
                runs[depth] = json.loads(finished.read_text())
                print(f"depth {depth}: measured before, read from {finished}", flush=True)
                continue
            folder = Path(tmp) / f"depth-{depth}"
            size = write_synthetic_checkpoint(folder, depth, shape, vocab)
            task = dict(
                folder=str(folder), output=str(Path(tmp) / f"out-{depth}"), work_dir=str(Path(tmp) / f"work-{depth}"),
                backend=args.backend, importance=args.importance, dtype=args.dtype, num_samples=args.num_samples,
                seq_len=args.seq_len, quality_windows=args.quality_windows,
            )  # fmt: skip
            if args.cap is not None:
                rss.evict_from_page_cache([path.resolve() for path in folder.glob("*.safetensors")])
                with rss.memory_cgroup(f"optimum-layerwise-bench-{os.getpid()}", args.cap) as cgroup:
                    result = common.run_isolated("streaming", "quantize_task", timeout=6 * 3600, cgroup=cgroup, **task)
                    result["cgroup"] = rss.cgroup_peak(cgroup)
            else:
                result = common.run_isolated("streaming", "quantize_task", timeout=6 * 3600, **task)
            result["checkpoint_bytes"] = size
            result["peak_anon_over_floor"] = result["quantize_peak"]["anon"] - floor["anon"]
            result["seconds_per_layer"] = seconds_per_layer(result["layers_written_s"])
            runs[depth] = result
            if kept:
                from optimum_layerwise.utils.atomic import atomic_write_text

                atomic_write_text(finished, json.dumps(result, indent=1))
            print(
                f"depth {depth}: {size / 1e9:.2f} GB on disk, quantized in {result['quantize_s']:.0f} s "
                f"({result['layers_resumed']} layers resumed, {result['seconds_per_layer']:.1f} s per layer), saved "
                f"in "
                f"{result['save_s']:.0f} s; peak anon {result['quantize_peak']['anon'] / 2**30:.2f} GiB "
                f"({result['peak_anon_over_floor'] / 2**30:.2f} over the floor), file "
                f"{result['quantize_peak']['file'] / 2**30:.2f} GiB, VmHWM {result['vm_hwm'] / 2**30:.2f} GiB",
                flush=True,
            )  # fmt: skip
    bound = bound_bytes(shape, vocab, dtype_bytes, args.num_samples, args.seq_len)
    depths = sorted(runs)
    if len(depths) > 1 and not any(runs[depth]["layers_resumed"] for depth in depths):
        slope = common.linear_fit([float(d) for d in depths], [runs[d]["quantize_s"] for d in depths])
    else:  # one depth, or a resumed run whose wall time is partial: the gaps between layers written
        slope = {"slope": statistics.median(runs[depth]["seconds_per_layer"] for depth in depths)}
    return common.write_results(
        args,
        {
            "shape": shape,
            "vocab_size": vocab,
            "cap_bytes": args.cap,
            "floor": floor,
            "bound": bound,
            "within_bound": {depth: runs[depth]["peak_anon_over_floor"] <= bound["bound"] for depth in depths},
            "runs": runs,
            "quantize_s_per_layer": slope,
            "llama_2_70b": seventy_b(slope["slope"], shape, dtype_bytes, args.num_samples, args.seq_len),
        },
    )


if __name__ == "__main__":
    main()
