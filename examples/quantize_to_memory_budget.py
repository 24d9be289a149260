"""Quantize a model so that the whole model fits a memory budget, with LIM deciding which layers keep 4 bits.

python examples/quantize_to_memory_budget.py --budget 160MB --output smollm2-160mb
"""

import argparse

from transformers import AutoModelForCausalLM, AutoTokenizer

import optimum_layerwise  # noqa: F401  (registers the "layerwise" quantization method)
from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.data.demo_models import DEMO_MODEL, resolve_model
from optimum_layerwise.model.footprint import tensor_nbytes


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default=DEMO_MODEL, help="folder, Hub id or demo model name")
parser.add_argument("--budget", default="160MB", help="bytes for the whole model, e.g. 160MB")
parser.add_argument("--dataset", default="shakespeare", help="calibration corpus name or text file")
parser.add_argument("--num-samples", type=int, default=32)
parser.add_argument("--group-size", type=int, default=128)
parser.add_argument("--output", required=True)
args = parser.parse_args()

path = resolve_model(args.model)
tokenizer = AutoTokenizer.from_pretrained(path)
config = LayerwiseQuantizationConfig(
    bits=(4, 2),
    memory_budget=args.budget,
    importance="lim",
    dataset=args.dataset,
    tokenizer=tokenizer,
    num_samples=args.num_samples,
    group_size=args.group_size,
)
model = AutoModelForCausalLM.from_pretrained(path, quantization_config=config)
plan = model.config.quantization_config.plan
print("bits per layer:", dict(plan.layer_bits))
print(f"model bytes: {tensor_nbytes(model):,} (budget {args.budget})")
model.save_pretrained(args.output)
tokenizer.save_pretrained(args.output)
