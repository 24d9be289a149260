"""Run inside an environment with vLLM: print, as JSON, the weight scheme vLLM's own compressed-tensors code picks for
each (fused) Linear module named on the command line, from the `quantization_config` of a checkpoint's config.json.

    python schemes.py CHECKPOINT model.layers.0.self_attn.qkv_proj model.layers.0.mlp.down_proj lm_head ...

Output: `{name: [scheme class, bits, group size or null] or null (left unquantized)}`. Needs no GPU and no vLLM
kernel: only the configuration parsing and scheme choice run (`CompressedTensorsConfig.get_scheme`).
"""

import json
import sys
from pathlib import Path

import torch
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import CompressedTensorsConfig


FUSED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def main(checkpoint: str, names: list[str]) -> None:
    quantization_config = json.loads((Path(checkpoint) / "config.json").read_text())["quantization_config"]
    config = CompressedTensorsConfig.from_config(quantization_config)
    config.packed_modules_mapping = FUSED  # set from the model class when vLLM loads a model
    placeholder = torch.nn.Linear(1, 1)  # get_scheme reads only the class name (for class-name targets)
    result = {}
    for name in names:
        scheme = config.get_scheme(placeholder, name)
        if scheme is None:
            result[name] = None
        else:
            group_size = None if scheme.group_size in (-1, None) else scheme.group_size
            result[name] = [type(scheme).__name__, scheme.num_bits, group_size]
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
