"""The device map that makes transformers load a model for low-memory quantization.

Low-memory quantization leaves every decoder layer in the checkpoint's own safetensors files (accelerate disk
offload, read when a layer is needed) and keeps the rest of the model (embeddings, final norm, head) in memory, on
the first GPU when there is one: the walk over the layers then runs there.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import decoder_layers, decoder_layers_path


def streaming_device_map(model: nn.Module) -> dict[str, str | int]:
    """A `device_map` for `model` (on the meta device, before loading) with each decoder layer on `"disk"` and every
    other module on the first GPU, or on the CPU without one.

    Raises:
        `ValueError`: when a module on the way to the decoder layers holds tensors of its own.
    """
    device: str | int = 0 if torch.cuda.is_available() else "cpu"
    path = decoder_layers_path(model)
    parts = path.split(".")
    device_map: dict[str, str | int] = {}
    for depth in range(len(parts)):
        parent_name = ".".join(parts[:depth])
        parent = model.get_submodule(parent_name)
        own = [name for name, _ in [*parent.named_parameters(recurse=False), *parent.named_buffers(recurse=False)]]
        if own:
            raise ValueError(f"Low-memory quantization cannot place {parent_name or 'the model'}'s own tensors {own}.")
        for name, _ in parent.named_children():
            full_name = f"{parent_name}.{name}" if parent_name else name
            if full_name != ".".join(parts[: depth + 1]):
                device_map[full_name] = device
    for index in range(len(decoder_layers(model))):
        device_map[f"{path}.{index}"] = "disk"
    return device_map
