"""Our plans as GGUF files, quantized by llama.cpp, against llama.cpp's own mixes at equal size.

For each `--targets` average bits, the demo model is quantized with the defaults of `optimum-layerwise quantize` at
module granularity (bits allocated among `--bits` by measured cost, imatrix rounding) and exported with
`optimum_layerwise.formats.export.export_gguf` twice: from the full-precision model (`base_model`: llama.cpp quantizes
the original weights to our plan's per-tensor types) and from the layer-wise checkpoint's own, dequantized weights.
Each row holds bits per weight counted from the file (as `bench/llama_cpp.py` counts them) and the held-out perplexity
on the same windows as the llama.cpp rows of `bench/results/llama_cpp-<model>.json`, measured the same way
(transformers dequantizes the GGUF). The layer-wise checkpoint itself is measured too. With `--imatrix`, a third
export from the full-precision model passes llama.cpp the importance matrix that `bench/llama_cpp.py --imatrix`
uses (our allocation, llama.cpp's importance-weighted rounding).

    python bench/gguf_export.py --model smollm2-135m --targets 5 6 7 --imatrix --threads 1
    python bench/gguf_export.py --model smollm2-135m --targets 5 --imatrix --peer-types Q4_K_S Q4_K_M Q5_K_S \
        --output bench/results/gguf_export-smollm2-135m-side-by-side.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import frontier
import llama_cpp as peer


def ours(folder: str, tokenizer, bits: tuple[int, ...], target: float, output: Path):
    """Quantize `folder` at module granularity to `target` average bits and save it with its tokenizer to `output`
    (or load it from there when an earlier run saved it); return the model."""
    from transformers import AutoModelForCausalLM

    from optimum_layerwise import LayerwiseQuantizationConfig

    if (output / "tokenizer.json").is_file():
        return AutoModelForCausalLM.from_pretrained(output)
    config = LayerwiseQuantizationConfig(
        bits=bits, target_bits=target, granularity="module", dataset="shakespeare", tokenizer=tokenizer
    )
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return model


def layerwise_row(model, output: Path, target: float, tokenizer) -> dict[str, Any]:
    """The layer-wise checkpoint itself, its bits per weight counted from its files as `bench/frontier.py` does."""
    seconds, ppl = common.timed(lambda: peer.held_out_perplexity(model, tokenizer))
    modules = dict(model.named_modules())
    planned = model.config.quantization_config.plan.modules
    linear_weights = {name: modules[name].in_features * modules[name].out_features for name in planned}
    packed = {f"{name}.{tensor}" for name in planned for tensor in ("weight", "weight_scale", "weight_shift")}
    others = sum(p.numel() for name, p in model.named_parameters() if name not in packed)  # biases count as they are
    bits = frontier.bits_per_weight(output, linear_weights, sum(linear_weights.values()) + others)
    return {"system": "ours (layer-wise)", "target_bits": target, **bits, "perplexity": ppl, "eval_seconds": seconds}


def exported_row(model, output: Path, target: float, source: str, tokenizer, **options) -> dict[str, Any]:
    from optimum_layerwise.formats.export.gguf import export_gguf

    seconds, path = common.timed(lambda: export_gguf(model, output, **options))
    row = peer.gguf_row(path, "plan", False, seconds, tokenizer)
    return {**row, "system": f"ours -> GGUF ({source})", "target_bits": target}


def report(row: dict[str, Any]) -> str:
    """One printed line per row."""
    return (
        f"{row['system']:<28} target {row['target_bits']:g}: linear {row['linear_bpw']:.3f} bpw, ppl "
        f"{row['perplexity']:.2f} (llama.cpp at the same bpw: {row['llama_cpp_at_same_bpw']}, with imatrix: "
        f"{row['llama_cpp_imatrix_at_same_bpw']})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = peer.demo_model_parser("gguf_export", __doc__)
    parser.add_argument("--bits", type=lambda v: tuple(int(b) for b in v.split(",")), default=(8, 4))
    parser.add_argument("--targets", type=float, nargs="+", default=[5.0, 6.0, 7.0])
    parser.add_argument("--imatrix", action="store_true", help="also export with llama.cpp's importance matrix")
    parser.add_argument(
        "--peer-types",
        nargs="+",
        default=[],
        help="also quantize the model to these llama.cpp types in this run (and with the imatrix, given --imatrix) "
        "and compare with them rather than with bench/results/llama_cpp-<model>.json",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers import AutoTokenizer

    from optimum_layerwise.data.demo_models import resolve_model
    from optimum_layerwise.utils.atomic import atomic_write_text

    args = common.start(build_parser(), argv)
    args.output = args.output or common.RESULTS_DIR / f"gguf_export-{args.model}.json"
    workdir = args.cache_dir / "work" / f"export-{args.model}"
    workdir.mkdir(parents=True, exist_ok=True)
    tree = peer.source_tree(args.cache_dir)
    quantize_binary = peer.build(args.cache_dir, tree) / "llama-quantize"
    os.environ["PYTHONPATH"] = str(peer.converter_packages(args.cache_dir))  # sentencepiece for the converter
    folder = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    f32 = peer.convert(tree, Path(os.environ["PYTHONPATH"]), folder, workdir / "F32.gguf", args.threads)
    imatrix = None
    if args.imatrix:  # made as bench/llama_cpp.py makes it: our default calibration windows, decoded
        imatrix = workdir / "imatrix.gguf"
        if not imatrix.is_file():
            windows, seq_len = peer.write_calibration_text(folder, workdir / "calibration.txt")
            bin_dir = quantize_binary.parent
            peer.compute_imatrix(bin_dir, f32, workdir / "calibration.txt", imatrix, windows, seq_len, args.threads)
    rows: list[dict[str, Any]] = []
    if args.peer_types:  # llama.cpp's own mixes, measured in this run
        for qtype in args.peer_types:
            for matrix in (None, imatrix) if imatrix is not None else (None,):
                row = peer.quantized_row(quantize_binary.parent, f32, qtype, workdir, args.threads, matrix, tokenizer)
                rows.append(row)
                print(peer.report(row), flush=True)
        peers = [row for row in rows if row["status"] == "ok"]
    else:  # llama.cpp's rows of bench/llama_cpp.py's result file (the same windows, measured the same way)
        peers = json.loads((common.RESULTS_DIR / f"llama_cpp-{args.model}.json").read_text())["rows"]
        peers = [row for row in peers if row["system"] == "llama.cpp" and row["perplexity"] and row["linear_bpw"] < 32]
    for target in args.targets:
        checkpoint = workdir / f"layerwise-{target:g}"
        model = ours(folder, tokenizer, args.bits, target, checkpoint)
        tool = {"llama_cpp": tree, "llama_quantize": quantize_binary}
        companions = [checkpoint / name for name in ("tokenizer.json", "tokenizer_config.json")]
        rows.append(layerwise_row(model, checkpoint, target, tokenizer))
        base = workdir / f"base-{target:g}.gguf"
        rows.append(exported_row(model, base, target, "base", tokenizer, base_model=folder, **tool))
        dequantized = workdir / f"dequantized-{target:g}.gguf"
        rows.append(
            exported_row(model, dequantized, target, "dequantized", tokenizer, companion_files=companions, **tool)
        )
        if imatrix is not None:
            weighted = workdir / f"base-imatrix-{target:g}.gguf"
            options = {"base_model": folder, "imatrix": imatrix, **tool}
            rows.append(exported_row(model, weighted, target, "base, imatrix", tokenizer, **options))
        for row in rows[-4 if imatrix is not None else -3 :]:
            for weighted in (False, True):
                points = [(p["linear_bpw"], p["perplexity"]) for p in peers if p["imatrix"] == weighted]
                reference = frontier.interpolate(frontier.pareto_front(points), row["linear_bpw"])
                row[f"llama_cpp{'_imatrix' if weighted else ''}_at_same_bpw"] = reference
            print(report(row), flush=True)
        payload = {**common.envelope(args), "model": args.model, "bits": list(args.bits), "rows": rows}
        atomic_write_text(args.output, json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.output} ({time.perf_counter() - args.started:.0f} s)")
    return args.output


if __name__ == "__main__":
    main()
