"""Time LIM and the layer-output sensitivity measurement against one plain forward pass over the same calibration
tokens, side by side in one process (the numbers quoted in docs/results.md).

    python docs/results/measure_sensitivity_cost.py [--model smollm2-135m] [--samples 16] [--repeats 2]
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_layerwise.data.calibration import calibration_batches
from optimum_layerwise.data.demo_models import resolve_model
from optimum_layerwise.importance.lim import lim_scores
from optimum_layerwise.importance.sensitivity import measure_layer_costs


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--samples", type=int, default=16)
parser.add_argument("--repeats", type=int, default=2)
args = parser.parse_args()

path = resolve_model(args.model)
model = AutoModelForCausalLM.from_pretrained(path)
batches = calibration_batches(
    "shakespeare", AutoTokenizer.from_pretrained(path), num_samples=args.samples, seq_len=512, batch_size=8
)


def plain_forward() -> None:
    with torch.no_grad():
        for batch in batches:
            model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)


jobs = {
    "forward": plain_forward,
    "lim": lambda: lim_scores(model, batches),
    "sensitivity_8to4": lambda: measure_layer_costs(model, batches, (8, 4)),
    "sensitivity_4to2": lambda: measure_layer_costs(model, batches, (4, 2)),
}
seconds: dict[str, list[float]] = {name: [] for name in jobs}
for _ in range(args.repeats):
    for name, job in jobs.items():
        start = time.perf_counter()
        job()
        seconds[name].append(time.perf_counter() - start)
ratios = {name: min(times) / min(seconds["forward"]) for name, times in seconds.items()}
print(json.dumps({"seconds": seconds, "ratio_to_forward": ratios}, indent=1))
