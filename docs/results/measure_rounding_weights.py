"""Where the gain of `optimizer="imatrix"` comes from: a demo model (default SmolLM2-135M) with every decoder Linear
at a uniform 4 bits (group size 128, or quanto's fallback, e.g. 96 in SmolLM2's 576-wide modules), scales and shifts
chosen by the range (`max`), by HQQ, by the imatrix search with uniform weights (what it does without calibration
data), and by the search weighted by each input channel's mean squared input on 8 windows of 512 Shakespeare tokens
(as `optimizer="imatrix"` does), by its square root, and by it plus 1% of its mean (damped: no channel's error is
ignored). Held-out perplexity on 16 x 512 KJV tokens, the windows of bench/frontier.py.

    python docs/results/measure_rounding_weights.py                               # SmolLM2: about 15 min on one core
    python docs/results/measure_rounding_weights.py --model qwen2.5-coder-0.5b

Writes docs/results/rounding-weights-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_layerwise.utils.atomic import atomic_write_text
from optimum_layerwise.data.calibration import calibration_batches
from optimum_layerwise.data.demo_models import resolve_model
from optimum_layerwise.evaluation.perplexity import evaluation_windows
from optimum_layerwise.model.layers import quantizable_linears
from optimum_layerwise.quantize.modules import QuantoLinear
from optimum_layerwise.plan import effective_group_size
from optimum_layerwise.model.perplexity import score_windows


def mean_squared_inputs(model, linears: dict, batches) -> dict[str, torch.Tensor]:
    """Mean squared input of every input channel of each Linear, over the calibration batches (padding included:
    these windows have none)."""
    sums = {name: torch.zeros(linear.in_features, dtype=torch.float64) for name, linear in linears.items()}
    counts = dict.fromkeys(linears, 0)

    def hook_for(name: str):
        def hook(module, args, output):
            flat = args[0].detach().reshape(-1, module.in_features).double()
            sums[name] += flat.square().sum(dim=0)
            counts[name] += flat.shape[0]

        return hook

    handles = [linear.register_forward_hook(hook_for(name)) for name, linear in linears.items()]
    with torch.no_grad():
        for batch in batches:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    for handle in handles:
        handle.remove()
    return {name: sums[name] / counts[name] for name in linears}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a demo model name (default: smollm2-135m)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    windows = evaluation_windows("kjv", tokenizer, seq_len=512, num_windows=16)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    layers = quantizable_linears(model, [])
    linears = {f"{index}.{name}": module for index, _, found in layers for name, module in found.items()}
    originals = {name: linear.weight.detach().clone() for name, linear in linears.items()}
    batches = calibration_batches("shakespeare", tokenizer, num_samples=8, seq_len=512, batch_size=1, seed=0)
    importance = mean_squared_inputs(model, linears, batches)
    results = {"unquantized": score_windows(model, *windows).perplexity}
    variants = {
        "max": ("max", lambda name: None),
        "hqq": ("hqq", lambda name: None),
        "search, uniform weights": ("imatrix", lambda name: None),
        "search, weighted by the inputs": ("imatrix", lambda name: importance[name]),
        "search, weighted by their root": ("imatrix", lambda name: importance[name].sqrt()),
        "search, weighted by them + 1% of their mean": (
            "imatrix",
            lambda name: importance[name] + 0.01 * importance[name].mean(),
        ),
    }
    for label, (optimizer, weights) in variants.items():
        start = time.perf_counter()
        with torch.no_grad():
            for name, linear in linears.items():
                group = effective_group_size(linear.in_features, 128)
                packed = QuantoLinear.from_linear(linear, 4, group, optimizer, weights(name))
                linear.weight.copy_(packed.dequantized_weight())
        seconds = time.perf_counter() - start
        results[label] = score_windows(model, *windows).perplexity
        print(f"{label}: perplexity {results[label]:.3f} (quantized in {seconds:.0f} s)", flush=True)
        with torch.no_grad():
            for name, linear in linears.items():
                linear.weight.copy_(originals[name])
    output = Path(__file__).with_name(f"rounding-weights-{args.model.split('-')[0]}.json")
    atomic_write_text(output, json.dumps(results, indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
