"""How few calibration tokens give the same layer ranking: each importance measured on N windows of 512 tokens,
compared with the ranking from the most windows (Spearman correlation, and the overlap of the layers it would keep
at the high level at the mean of two levels), plus the time each took. Chooses the default `num_samples`.

    python docs/results/measure_ranking_stability.py --model smollm2-135m --windows 64 32 16 8 4 2
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_layerwise.plan.allocation import importance_order
from optimum_layerwise.data.demo_models import resolve_model
from optimum_layerwise.importance import compute_importance


def spearman(first: list[float], second: list[float]) -> float:
    rank_a = {index: rank for rank, index in enumerate(importance_order(first))}
    rank_b = {index: rank for rank, index in enumerate(importance_order(second))}
    count = len(first)
    return 1 - 6 * sum((rank_a[i] - rank_b[i]) ** 2 for i in range(count)) / (count * (count**2 - 1))


def kept_high(scores: list[float]) -> set[int]:
    return set(importance_order(scores)[: len(scores) // 2])


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--windows", type=int, nargs="+", default=[64, 32, 16, 8, 4, 2])
parser.add_argument("--methods", nargs="+", default=["sensitivity", "lim"])
parser.add_argument("--bits", default="8,4")
args = parser.parse_args()
torch.set_num_threads(1)
bits = tuple(int(part) for part in args.bits.split(","))
path = resolve_model(args.model)
model = AutoModelForCausalLM.from_pretrained(path)
tokenizer = AutoTokenizer.from_pretrained(path)
results = {}
for method in args.methods:
    runs = {}
    for count in sorted(args.windows, reverse=True):
        start = time.perf_counter()
        scores = compute_importance(
            model, method, "shakespeare", tokenizer, num_samples=count, seq_len=512, bits=bits, group_size=128
        )
        runs[count] = {"seconds": round(time.perf_counter() - start, 1), "scores": scores}
    reference = runs[max(runs)]["scores"]
    for count, run in runs.items():
        run["spearman_vs_most"] = round(spearman(run["scores"], reference), 4)
        run["high_half_overlap"] = len(kept_high(run["scores"]) & kept_high(reference)) / (len(reference) // 2)
        print(
            f"{method:12} {count:3} windows: {run['seconds']:7.1f} s, spearman {run['spearman_vs_most']:.3f}, "
            f"high-level layers shared {run['high_half_overlap']:.0%}",
            flush=True,
        )
    results[method] = runs
print(json.dumps({"model": args.model, "bits": bits, "results": results}))
