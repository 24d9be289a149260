"""Scaling: how quantization time, LIM time and peak memory grow with layers, hidden size and calibration tokens, on
synthetic Llama-2-shaped models (random weights, bfloat16, vocabulary 32,000), and what that predicts for Llama-2-7B
and Llama-2-70B.

Measured: layers 4/8/16 at hidden 512; hidden 256/512/1024 at 8 layers; LIM over 1,024/2,048/4,096 tokens at
8 x 512. Per model, a fresh process quantizes on load (time, peak RSS) and another times the stages apart (plain
load, LIM, `quantize_model`). One more process runs LIM on the largest synthetic model with every decoder layer
offloaded to disk (accelerate). Quantizing models larger than memory is measured by `streaming.py`.
Extrapolated: everything under `extrapolation`, from linear fits and per-parameter rates of the measurements.

    python bench/scaling.py
    python bench/scaling.py --quick
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import common
import rss
from footprint import theoretical_bytes


DTYPE = "bfloat16"
FULL = {
    "sizes": ((512, 4), (512, 8), (512, 16), (256, 8), (1024, 8)),  # (hidden, layers): both axes through (512, 8)
    "base": (512, 8),  # the size that also gets the token axis
    "tokens": (1024, 2048, 4096),
    "seq_len": 512,
    "vocab": 32000,
}
QUICK = {"sizes": ((128, 2), (256, 2)), "base": (128, 2), "tokens": (128, 256), "seq_len": 64, "vocab": 512}
PAPER_TOKENS = 128 * 512  # LayerwiseQuantizationConfig defaults: num_samples=128, seq_len=512
TARGETS = {  # Llama-2 shapes
    "llama-2-7b": {"hidden_size": 4096, "num_layers": 32, "intermediate_size": 11008},
    "llama-2-70b": {"hidden_size": 8192, "num_layers": 80, "intermediate_size": 28672, "kv_heads": 8},
}


def onload_task(folder: str) -> dict:
    """Child task: quantize on load (half of the layers at 2 bits, ZD); time, peak RSS and its anonymous part (the
    rest is the memory-mapped checkpoint, which the kernel can reclaim)."""
    with rss.RssSampler() as sampler:
        load_s, _ = common.timed(lambda: common.load_model(folder, DTYPE, "layerwise", common.num_layers(folder) // 2))
    return {"load_quantize_s": load_s, "peak_rss": rss.peak_rss_bytes(), "sampled_peak_anon": sampler.peaks["anon"]}


def stages_task(folder: str, token_counts: list[int], seq_len: int) -> dict:
    """Child task: plain load, LIM over each of `token_counts` (random ids), then `quantize_model`, each timed; the
    LIM scores over the first token count and the peak RSS after LIM (model in memory, before quantization)."""
    from optimum_layerwise.hf.compress import quantize_model
    from optimum_layerwise.importance.lim import lim_scores

    load_s, model = common.timed(lambda: common.load_model(folder, DTYPE))
    batches = {tokens: common.random_batches(model.config.vocab_size, tokens, seq_len, 2) for tokens in token_counts}
    lim_scores(model, batches[token_counts[0]][:1])  # warm-up
    lim_s, scores = {}, {}
    for tokens, token_batches in batches.items():
        lim_s[tokens], scores[tokens] = common.timed(
            lambda token_batches=token_batches: lim_scores(model, token_batches)
        )
    lim_peak_rss = rss.peak_rss_bytes()
    quantize_s, _ = common.timed(
        lambda: quantize_model(model, common.layerwise_config(model.config.num_hidden_layers // 2))
    )
    return {
        "load_s": load_s,
        "lim_s": lim_s,
        "lim_scores": scores[token_counts[0]],
        "lim_peak_rss": lim_peak_rss,
        "quantize_s": quantize_s,
    }


def offload_device_map(folder: str) -> dict[str, str]:
    """Every decoder layer on disk, the rest on cpu."""
    device_map = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    device_map.update({f"model.layers.{index}": "disk" for index in range(common.num_layers(folder))})
    return device_map


def offload_lim_task(folder: str, tokens: int, seq_len: int, offload_folder: str) -> dict:
    """Child task: LIM with every decoder layer offloaded to disk by accelerate; time, peak RSS, scores."""
    import torch
    from transformers import AutoModelForCausalLM

    from optimum_layerwise.importance.lim import lim_scores

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=getattr(torch, DTYPE), device_map=offload_device_map(folder), offload_folder=offload_folder
    ).eval()
    batches = common.random_batches(model.config.vocab_size, tokens, seq_len, 2)
    lim_s, scores = common.timed(lambda: lim_scores(model, batches))
    return {"lim_s": lim_s, "lim_scores": scores, "peak_rss": rss.peak_rss_bytes()}


def shape(config) -> dict:
    """Parameter counts of `config` (meta device: nothing allocated) and the theory bytes of a 3-bit 4/2 mix."""
    import torch
    from transformers import AutoModelForCausalLM

    from optimum_layerwise.model.layers import decoder_layers, linear_modules

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linears = sum(
        linear.weight.numel() for layer in decoder_layers(model) for linear in linear_modules(layer).values()
    )
    layers = config.num_hidden_layers
    mixed = theoretical_bytes(config, DTYPE, {i: 4 if i < layers - layers // 2 else 2 for i in range(layers)}, 128)
    return {
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_layers": layers,
        "params": sum(p.numel() for p in model.parameters()),
        "decoder_linear_params": linears,
        "bf16_bytes": mixed["unquantized_model"],
        "mixed_4_2_bytes": mixed["total"],
    }


def measure_size(hidden: int, layers: int, token_counts: Sequence[int], settings: dict, workdir: Path) -> dict:
    """Save a random model of one size; stages and quantize-on-load, each in a fresh process."""
    config = common.synthetic_llama_config(hidden, layers, vocab_size=settings["vocab"])
    folder = common.save_random_checkpoint(config, workdir / f"h{hidden}-l{layers}", DTYPE)
    stages = common.run_isolated(
        "scaling", "stages_task", folder=folder, token_counts=list(token_counts), seq_len=settings["seq_len"]
    )
    stages["lim_s"] = {int(tokens): seconds for tokens, seconds in stages["lim_s"].items()}  # JSON keys are str
    onload = common.run_isolated("scaling", "onload_task", folder=folder)
    return {**shape(config), "folder": folder, **stages, **onload}


def offload_checks(largest: dict, tokens: int, seq_len: int, workdir: Path) -> dict:
    """LIM with the decoder layers on disk (scores and time vs in memory), on the largest measured model (quantizing
    with layers on disk is `streaming.py`'s)."""
    lim = common.run_isolated(
        "scaling",
        "offload_lim_task",
        folder=largest["folder"],
        tokens=tokens,
        seq_len=seq_len,
        offload_folder=str(workdir / "offload-lim"),
    )
    lim["max_abs_score_difference"] = max(
        abs(a - b) for a, b in zip(lim["lim_scores"], largest["lim_scores"], strict=True)
    )
    lim["lim_s_vs_in_memory"] = lim["lim_s"] / largest["lim_s"][tokens]
    return {"model": f"hidden {largest['hidden_size']}, {largest['num_layers']} layers", "lim": lim}


def measure(settings: dict, workdir: Path) -> dict:
    """Every size (the token axis on the base size), then the offload checks on the largest."""
    baseline = common.run_isolated("rss", "baseline_process")
    points = []
    for hidden, layers in settings["sizes"]:
        tokens = settings["tokens"] if (hidden, layers) == settings["base"] else settings["tokens"][:1]
        point = measure_size(hidden, layers, tokens, settings, workdir)
        bf16_bytes = point["bf16_bytes"]
        point["peak_over_baseline_vs_bf16"] = (point["peak_rss"] - baseline["peak_rss"]) / bf16_bytes
        point["anon_peak_over_baseline_vs_bf16"] = (point["sampled_peak_anon"] - baseline["anon"]) / bf16_bytes
        points.append(point)
        print(
            f"hidden {hidden} layers {layers}: quantize {point['quantize_s']:.2f} s, LIM({tokens[0]} tokens) "
            f"{point['lim_s'][tokens[0]]:.2f} s, quantize-on-load {point['load_quantize_s']:.2f} s, "
            f"(peak - floor) / bf16 bytes {point['peak_over_baseline_vs_bf16']:.2f}",
            flush=True,
        )
    largest = max(points, key=lambda point: point["params"])
    offload = offload_checks(largest, settings["tokens"][0], settings["seq_len"], workdir)
    offload["lim"]["peak_rss_over_baseline"] = offload["lim"]["peak_rss"] - baseline["peak_rss"]
    offload["lim"]["in_memory_peak_rss_over_baseline"] = largest["lim_peak_rss"] - baseline["peak_rss"]
    for point in points:
        del point["folder"]
    return {"baseline": baseline, "points": points, "offload": offload}


def extrapolate(points: list[dict], token_axis: Sequence[int]) -> dict:
    """Linear fits of the measurements and what they predict for the Llama-2 shapes (1 CPU thread)."""
    quantize_fit = common.linear_fit(
        [point["decoder_linear_params"] for point in points], [point["quantize_s"] for point in points]
    )
    lim_per_token_param = [
        point["lim_s"][token_axis[0]] / (token_axis[0] * point["decoder_linear_params"]) for point in points
    ]
    base = next(point for point in points if len(point["lim_s"]) == len(token_axis))
    token_fit = common.linear_fit(list(token_axis), [base["lim_s"][tokens] for tokens in token_axis])
    largest = max(points, key=lambda point: point["decoder_linear_params"])
    # the largest model's rate, fixed costs included: a fit's slope through small, noisy points can even be negative
    quantize_rate = largest["quantize_s"] / largest["decoder_linear_params"]
    peak_ratio = max(point["peak_over_baseline_vs_bf16"] for point in points)
    anon_ratio = max(point["anon_peak_over_baseline_vs_bf16"] for point in points)
    lim_rate = max(lim_per_token_param)  # slowest measured rate: larger matmuls only run faster per FLOP
    predictions = {}
    for name, target in TARGETS.items():
        info = shape(common.synthetic_llama_config(**target))
        predictions[name] = {
            **info,
            "quantize_s": quantize_rate * info["decoder_linear_params"],
            "lim_s_paper_calibration": lim_rate * PAPER_TOKENS * info["decoder_linear_params"],
            "quantize_on_load_peak_rss_bytes": peak_ratio * info["bf16_bytes"],
            "quantize_on_load_anon_peak_bytes": anon_ratio * info["bf16_bytes"],
        }
    return {
        "quantize_s_vs_decoder_params": quantize_fit,
        "quantize_s_per_decoder_param_largest": quantize_rate,
        "lim_s_vs_tokens": token_fit,
        "lim_s_per_token_per_param": common.summarize(lim_per_token_param),
        "peak_over_baseline_vs_bf16_max": peak_ratio,
        "anon_peak_over_baseline_vs_bf16_max": anon_ratio,
        "paper_calibration_tokens": PAPER_TOKENS,
        "predictions": predictions,
    }


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("scaling", __doc__.split("\n\n")[0], models=None, repeats=None)
    args = common.start(parser, argv)
    settings = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as workdir:
        measured = measure(settings, Path(workdir))
    results = {
        "dtype": DTYPE,
        "seq_len": settings["seq_len"],
        "vocab_size": settings["vocab"],
        "base": settings["base"],
        "token_axis": settings["tokens"],
        **measured,
        "extrapolation": extrapolate(measured["points"], settings["tokens"]),
    }
    for name, row in results["extrapolation"]["predictions"].items():
        print(
            f"{name}: quantize {row['quantize_s'] / 60:.0f} min, LIM over {PAPER_TOKENS} tokens "
            f"{row['lim_s_paper_calibration'] / 3600:.1f} h, quantize-on-load peak "
            f"{row['quantize_on_load_peak_rss_bytes'] / 1e9:.0f} GB (1 CPU thread)"
        )
    return common.write_results(args, results)


if __name__ == "__main__":
    main()
