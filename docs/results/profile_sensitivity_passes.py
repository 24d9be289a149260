"""Break the layer-output sensitivity measurement down against its two passes, side by side in one process: a plain
forward pass, the same forward pass with every layer's Linear modules quantized (the float copies the measurement
uses), the measurement itself (4->2), and quantizing every layer once (the numbers quoted in docs/results.md).

    OMP_NUM_THREADS=1 python docs/results/profile_sensitivity_passes.py [--model smollm2-135m] [--samples 4]
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_layerwise.data.calibration import calibration_batches
from optimum_layerwise.data.demo_models import resolve_model
from optimum_layerwise.importance.sensitivity import measure_layer_costs
from optimum_layerwise.quantize.swapping import LayerVersions


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--samples", type=int, default=4)
parser.add_argument("--rounds", type=int, default=2)
args = parser.parse_args()

path = resolve_model(args.model)
model = AutoModelForCausalLM.from_pretrained(path)
tokenizer = AutoTokenizer.from_pretrained(path)
batches = calibration_batches("shakespeare", tokenizer, num_samples=args.samples, seq_len=512, batch_size=args.samples)
versions = LayerVersions(model, "quanto", 128, simulate=True)
all_low = dict.fromkeys(range(len(versions.layers)), 2)


def timed(job) -> float:
    start = time.perf_counter()
    job()
    return time.perf_counter() - start


def forward() -> None:
    with torch.no_grad():
        for batch in batches:
            model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)


def quantized_forward() -> None:
    versions.apply(all_low)
    try:
        forward()
    finally:
        versions.apply(None)


seconds = {"quantize_every_layer_once": timed(lambda: versions.apply(all_low) or versions.apply(None))}
for name in ("forward", "quantized_forward", "measurement_4to2"):
    seconds[name] = []
for _ in range(args.rounds):
    seconds["forward"].append(timed(forward))
    seconds["quantized_forward"].append(timed(quantized_forward))
    seconds["measurement_4to2"].append(timed(lambda: measure_layer_costs(model, batches, (4, 2))))
print(json.dumps(seconds, indent=1))
