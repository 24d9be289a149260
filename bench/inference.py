"""Inference speed: prefill (512 tokens) and greedy decode (64 tokens), batch 1, for the unquantized model,
transformers' uniform `QuantoConfig(weights="int4")`, and our layer-wise modules all at 4 bits, as a 4/2 mix (half
of the layers at 2 bits) and as an 8/4 mix (half at 4). Goals: the 4/2 model is never slower than uniform quanto int4
by more than 5%; a layer-wise model decodes on CPU within 1.5x of the same model in float32 (loaded too when the
dtype is another).

All variants live in one process and are timed side by side, rounds interleaved. `layerwise-int4` runs exactly the
kernels of `quanto-int4`, so their ratio is the overhead of our modules; `layerwise-4/2` adds quanto's int2 kernel.
Profiles back the numbers (`profiles.py`), and decode of `layerwise-int4` with its quanto tensors prebuilt (what
caching the whole tensor in the module would give; patched in this process only) runs side by side with quanto int4.

    python bench/inference.py --models smollm2-135m --dtypes bfloat16 float32 --repeats 3
    python bench/inference.py --quick
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import common
import profiles
import rss


GOAL = 1.05
CPU_DECODE_GOAL = 1.5
FLOAT32 = "unquantized-float32"
METRICS = ("prefill_s", "decode_ms_per_token")


def variants(folder: str, dtype: str) -> dict:
    """The models compared: name to loaded model. The float32 model is always among them: it is the reference of the
    CPU decode goal."""
    layers = common.num_layers(folder)
    models = {
        "unquantized": common.load_model(folder, dtype),
        "quanto-int4": common.load_model(folder, dtype, "quanto-int4"),
        "layerwise-int4": common.load_model(folder, dtype, "layerwise", 0),
        "layerwise-4/2": common.load_model(folder, dtype, "layerwise", layers // 2),
        "layerwise-8/4": common.load_model(folder, dtype, "layerwise", layers // 2, bits=(8, 4)),
    }
    if dtype != "float32":
        models[FLOAT32] = common.load_model(folder, "float32")
    return models


def generate(model, prompt, decode_tokens: int) -> dict[str, float]:
    """Time a prefill of `prompt` and `decode_tokens` greedy steps with the KV cache."""
    import torch

    with torch.no_grad():
        prefill_s, out = common.timed(lambda: model(prompt, use_cache=True))
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        begin = time.perf_counter()
        for _ in range(decode_tokens):
            out = model(token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        decode_s = time.perf_counter() - begin
    return {"prefill_s": prefill_s, "decode_ms_per_token": 1000 * decode_s / decode_tokens}


def side_by_side(runs: dict[str, list[dict]], metrics: Sequence[str], references: Sequence[str]) -> dict:
    """Per variant and metric: the [`common.summarize`] of its runs and its round-by-round ratio to each reference."""
    table: dict = {}
    for variant, measured in runs.items():
        row = table[variant] = {}
        for metric in metrics:
            values = [run[metric] for run in measured]
            row[metric] = common.summarize(values)
            for reference in references:
                row[f"{metric}_vs_{reference}"] = common.ratio_summary(
                    values, [run[metric] for run in runs[reference]]
                )
    return table


def prebuilt_check(models: dict, prompt, decode_tokens: int, repeats: int) -> dict:
    """Decode speed of `layerwise-int4` as shipped vs with every `QuantoLinear` forward calling `F.linear` on a quanto
    tensor built once, side by side with `quanto-int4`. The patch lives on the module instances of this process only
    and is removed afterwards."""
    import torch

    from optimum_layerwise.quantize.modules import QuantoLinear

    model = models["layerwise-int4"]
    packed = [module for module in model.modules() if isinstance(module, QuantoLinear)]

    def prebuilt() -> dict[str, float]:
        for module in packed:
            weight, bias = module.quanto_weight(), module.bias
            module.forward = lambda x, weight=weight, bias=bias: torch.nn.functional.linear(x, weight, bias)
        try:
            return generate(model, prompt, decode_tokens)
        finally:
            for module in packed:
                del module.forward

    runs = common.interleave(
        {
            "quanto-int4": lambda: generate(models["quanto-int4"], prompt, decode_tokens),
            "layerwise-int4": lambda: generate(model, prompt, decode_tokens),
            "layerwise-int4-prebuilt": prebuilt,
        },
        repeats,
    )
    return {"decode_tokens": decode_tokens, **side_by_side(runs, ["decode_ms_per_token"], ["quanto-int4"])}


def measure(name: str, folder: str, dtype: str, prefill_tokens: int, decode_tokens: int, repeats: int) -> dict:
    """Every variant of one model in one dtype, then the profiles."""
    models = variants(folder, dtype)
    prompt = common.prompt_ids(name, folder, prefill_tokens)
    for model in models.values():
        generate(model, prompt[:, :16], 2)  # warm-up: allocator, TinyGemm repacking
    runs = common.interleave(
        {variant: lambda model=model: generate(model, prompt, decode_tokens) for variant, model in models.items()},
        repeats,
    )
    float32 = FLOAT32 if FLOAT32 in models else "unquantized"
    table = side_by_side(runs, METRICS, ["quanto-int4", "unquantized", float32])
    for variant, model in models.items():
        table[variant]["model_bytes"] = rss.model_nbytes(model)
        table[variant]["decode_vs_float32"] = table[variant][f"decode_ms_per_token_vs_{float32}"]
    mixed = table["layerwise-4/2"]
    return {
        "dtype": dtype,
        "prefill_tokens": prompt.shape[1],
        "decode_tokens": decode_tokens,
        "variants": table,
        "goal": GOAL,
        "goal_met": {metric: mixed[f"{metric}_vs_quanto-int4"]["median"] <= GOAL for metric in METRICS},
        "cpu_decode_goal": CPU_DECODE_GOAL,
        "cpu_decode_goal_met": {
            variant: table[variant]["decode_vs_float32"]["median"] <= CPU_DECODE_GOAL
            for variant in models
            if variant.startswith("layerwise")
        },
        "module_overhead": profiles.module_overhead(models["layerwise-4/2"], dtype),
        "prebuilt_check": prebuilt_check(models, prompt[:, :32], max(8, decode_tokens // 4), max(3, repeats)),
        "decode_profile": {
            variant: profiles.profile_decode_step(models[variant], prompt[:, :32])
            for variant in ("quanto-int4", "layerwise-4/2")
        },
    }


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("inference", __doc__.split("\n\n")[0], repeats=3)
    parser.add_argument("--dtypes", nargs="+", choices=common.DTYPES, default=list(common.DTYPES))
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=64)
    args = common.start(parser, argv)
    if args.quick:
        args.dtypes, args.prefill_tokens, args.decode_tokens = ["bfloat16"], 64, 8

    def measure_model(name: str, folder: str, _: Path) -> dict:
        return {
            dtype: measure(name, folder, dtype, args.prefill_tokens, args.decode_tokens, args.repeats)
            for dtype in args.dtypes
        }

    def report(name: str, result: dict) -> list[str]:
        lines = []
        for dtype, by_dtype in result.items():
            for variant, row in by_dtype["variants"].items():
                lines.append(
                    f"{name} {dtype} {variant}: prefill {row['prefill_s']['median']:.2f} s "
                    f"(x{row['prefill_s_vs_quanto-int4']['median']:.2f} quanto-int4), decode "
                    f"{row['decode_ms_per_token']['median']:.1f} ms/token "
                    f"(x{row['decode_ms_per_token_vs_quanto-int4']['median']:.2f}, "
                    f"x{row['decode_vs_float32']['median']:.2f} float32)"
                )
            lines.append(
                f"{name} {dtype} module overhead: {by_dtype['module_overhead']['overhead_ms_per_token']:.2f} ms"
            )
        return lines

    return common.run_per_model(args, measure_model, report)


if __name__ == "__main__":
    main()
