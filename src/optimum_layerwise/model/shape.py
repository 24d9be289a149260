"""The sizes a memory prediction starts from, read from a model on the meta device (no weight is loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .layers import decoder_layers, linear_modules, text_config


@dataclass(frozen=True)
class ModelShape:
    """Bytes and widths of a causal LM in one compute dtype.

    Args:
        num_layers (`int`): decoder layers.
        hidden_size (`int`), intermediate_size (`int`): widths of the residual stream and of the MLP.
        num_heads (`int`): attention heads.
        vocab_size (`int`): rows of the embedding.
        dtype (`torch.dtype`): the compute dtype.
        layer_bytes (`tuple[int, ...]`): each decoder layer's parameters and buffers, in the compute dtype.
        other_bytes (`int`): everything outside the decoder layers (embeddings, final norm, head; tied once).
        linear_shapes (`tuple[tuple[int, int], ...]`): `(out_features, in_features)` of the Linears of the largest
            decoder layer.
    """

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    vocab_size: int
    dtype: torch.dtype
    layer_bytes: tuple[int, ...]
    other_bytes: int
    linear_shapes: tuple[tuple[int, int], ...]

    @property
    def element_size(self) -> int:
        """Bytes of one value in the compute dtype."""
        return self.dtype.itemsize

    @property
    def total_bytes(self) -> int:
        """All weights in the compute dtype."""
        return self.other_bytes + sum(self.layer_bytes)

    @property
    def largest_layer_bytes(self) -> int:
        return max(self.layer_bytes, default=0)

    @property
    def largest_linear(self) -> int:
        """Weights of the largest Linear of a decoder layer."""
        return max((rows * columns for rows, columns in self.linear_shapes), default=0)

    @classmethod
    def from_model(cls, model: nn.Module, dtype: torch.dtype | None = None) -> ModelShape:
        """Read `model` (on any device, the meta device included); floating tensors count in `dtype` (by default,
        the model's own)."""
        dtype = dtype or _float_dtype(model)
        element_size = dtype.itemsize

        def nbytes(tensors) -> int:
            unique = {id(tensor): tensor for tensor in tensors}.values()
            return sum(t.numel() * (element_size if t.is_floating_point() else t.element_size()) for t in unique)

        config = text_config(model)
        head = set()
        if getattr(config, "tie_word_embeddings", False) and model.get_output_embeddings() is not None:
            weight = model.get_output_embeddings().weight
            if weight is not model.get_input_embeddings().weight:  # not tied yet before the weights load
                head.add(id(weight))
        layers = decoder_layers(model)
        layer_bytes = tuple(nbytes([*layer.parameters(), *layer.buffers()]) for layer in layers)
        inside = {id(tensor) for layer in layers for tensor in [*layer.parameters(), *layer.buffers()]} | head
        other = nbytes([t for t in [*model.parameters(), *model.buffers()] if id(t) not in inside])
        largest = max(range(len(layers)), key=layer_bytes.__getitem__) if len(layers) else None
        linears = linear_modules(layers[largest]) if largest is not None else {}
        hidden = int(getattr(config, "hidden_size", 0) or 0)
        return cls(
            num_layers=len(layers),
            hidden_size=hidden,
            intermediate_size=int(getattr(config, "intermediate_size", None) or 4 * hidden),
            num_heads=int(getattr(config, "num_attention_heads", 1) or 1),
            vocab_size=int(getattr(config, "vocab_size", 0) or 0),
            dtype=dtype,
            layer_bytes=layer_bytes,
            other_bytes=other,
            linear_shapes=tuple((linear.out_features, linear.in_features) for linear in linears.values()),
        )

    @classmethod
    def from_config(cls, config: Any, dtype: torch.dtype | None = None) -> ModelShape:
        """Build the model of a transformers `config` on the meta device and read it."""
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return cls.from_model(model, dtype or _config_dtype(config))


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _config_dtype(config: Any) -> torch.dtype:
    """The dtype a checkpoint's config declares (`dtype` or `torch_dtype`), float32 when it declares none."""
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if isinstance(declared, torch.dtype) else torch.float32
