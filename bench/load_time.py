"""Load time of a saved mixed 4/2-bit checkpoint vs loading the unquantized model from safetensors.

Three checkpoints of the same model: the unquantized float32 folder as stored, an unquantized bfloat16 copy, and a
mixed 4/2-bit bfloat16 checkpoint (half of the layers at 2 bits). Each load runs in a fresh process (the files are in
the page cache after the first round: this is warm-cache load time), rounds interleaved. `first_forward_s` is a
one-token forward right after loading: it includes the one-time TinyGemm repacking of the mixed model's int4 layers.

    python bench/load_time.py --models smollm2-135m qwen2.5-coder-0.5b --repeats 5
    python bench/load_time.py --quick
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import common


def load_task(folder: str, dtype: str) -> dict:
    """Child task: time `from_pretrained` of `folder`, then a one-token forward."""
    import torch
    from transformers import AutoModelForCausalLM

    import optimum_layerwise  # noqa: F401  (registers the quantizer; imported before the clock starts)

    load_s, model = common.timed(
        lambda: AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    )
    with torch.no_grad():
        first_forward_s, _ = common.timed(lambda: model(torch.zeros((1, 1), dtype=torch.long)))
    return {"load_s": load_s, "first_forward_s": first_forward_s}


def measure(folder: str, repeats: int, workdir: Path) -> dict:
    """Prepare the three checkpoints of one model, then time their loads side by side."""
    from optimum_layerwise.model.footprint import safetensors_tensor_bytes

    plain_bf16, mixed = str(workdir / "plain-bf16"), str(workdir / "mixed-bf16")
    common.run_isolated("common", "save_plain", folder=folder, dtype="bfloat16", output=plain_bf16)
    common.run_isolated(
        "common",
        "quantize_and_save",
        folder=folder,
        dtype="bfloat16",
        num_low_bit_layers=common.num_layers(folder) // 2,
        output=mixed,
    )
    checkpoints = {
        "unquantized-fp32": (folder, "float32"),
        "unquantized-bf16": (plain_bf16, "bfloat16"),
        "mixed-4/2-bf16": (mixed, "bfloat16"),
    }
    runs = common.interleave(
        {
            name: lambda path=path, dtype=dtype: common.run_isolated(
                "load_time", "load_task", folder=path, dtype=dtype
            )
            for name, (path, dtype) in checkpoints.items()
        },
        repeats,
    )
    load_s = {name: [run["load_s"] for run in measured] for name, measured in runs.items()}
    return {
        name: {
            "dtype": checkpoints[name][1],
            "tensor_bytes": sum(safetensors_tensor_bytes(checkpoints[name][0]).values()),
            "load_s": common.summarize(load_s[name]),
            "first_forward_s": common.summarize([run["first_forward_s"] for run in measured]),
            "load_s_vs_unquantized_bf16": common.ratio_summary(load_s[name], load_s["unquantized-bf16"]),
            "load_s_vs_unquantized_fp32": common.ratio_summary(load_s[name], load_s["unquantized-fp32"]),
        }
        for name, measured in runs.items()
    }


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("load_time", __doc__.split("\n\n")[0], repeats=5)
    args = common.start(parser, argv)

    def report(name: str, result: dict) -> list[str]:
        return [
            f"{name} {checkpoint}: load {row['load_s']['median']:.2f} s "
            f"({row['load_s']['min']:.2f}-{row['load_s']['max']:.2f}), first forward "
            f"{row['first_forward_s']['median']:.2f} s, {row['tensor_bytes'] / 1e6:.0f} MB"
            for checkpoint, row in result.items()
        ]

    return common.run_per_model(args, lambda _, folder, workdir: measure(folder, args.repeats, workdir), report)


if __name__ == "__main__":
    main()
