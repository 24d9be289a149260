"""Load a saved layer-wise checkpoint with an accelerate device map and generate a few tokens.

python examples/load_with_device_map.py smollm2-160mb --prompt "The capital of France is"
"""

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import optimum_layerwise  # noqa: F401  (must be imported before loading a layer-wise checkpoint)


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint")
parser.add_argument("--prompt", default="The capital of France is")
parser.add_argument("--device-map", default="auto")
parser.add_argument("--max-new-tokens", type=int, default=8)
args = parser.parse_args()

tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
model = AutoModelForCausalLM.from_pretrained(args.checkpoint, device_map=args.device_map)
print("device map:", getattr(model, "hf_device_map", {"": str(model.device)}))
inputs = tokenizer(args.prompt, return_tensors="pt").to(model.device)
with torch.no_grad():
    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
print(tokenizer.decode(output[0], skip_special_tokens=True))
