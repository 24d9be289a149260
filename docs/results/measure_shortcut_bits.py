"""Which part of a sliced, then quantized SmolLM2 loses the quality: its 4-bit rotated weights, or its shortcut
matrices quantized with them? Slices by LIM at 30%, puts every decoder layer at 4 bits, once with the shortcuts kept
in float32 and once with `quantize_shortcuts=True`, and prints the KJV perplexity of each (docs/results.md).

    python docs/results/measure_shortcut_bits.py
"""

import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_layerwise import LayerwiseQuantizationConfig, LayerwiseSlicingConfig
from optimum_layerwise.data.demo_models import resolve_model
from optimum_layerwise.evaluation.perplexity import perplexity


torch.set_num_threads(1)
folder = resolve_model("smollm2-135m")
tokenizer = AutoTokenizer.from_pretrained(folder)
data = dict(dataset="shakespeare", tokenizer=tokenizer, num_samples=64, seq_len=256)
for quantize_shortcuts in (False, True):
    begin = time.perf_counter()
    config = LayerwiseQuantizationConfig(
        layer_bits=dict.fromkeys(range(30), 4),
        slicing=LayerwiseSlicingConfig(sparsity=0.3, **data),
        quantize_shortcuts=quantize_shortcuts,
        **data,
    )
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, quantization_config=config).eval()
    score = perplexity(model, "kjv", tokenizer, seq_len=256, num_windows=16).perplexity
    print(
        f"sliced 30% (LIM), every layer at 4 bits, quantize_shortcuts={quantize_shortcuts}: KJV perplexity "
        f"{score:.2f} ({time.perf_counter() - begin:.0f} s)",
        flush=True,
    )
