"""Calibration batches through the decoder layers one layer at a time: the walk that every data-driven step uses
(LIM, measured sensitivity, GPT-Q and imatrix calibration).

One pass of the model's embeddings records the first layer's inputs and the keyword arguments of every layer
(attention masks and position embeddings, which differ per layer on models that mix sliding and full attention);
the decoder layers do not run in it (each is replaced by a recorder for that pass). Then each layer in turn is held
in memory ([`~optimum_layerwise.offload.materialized`]: read from disk when accelerate offloaded it), run on its
inputs by a step of the caller, and its outputs become the next layer's inputs. The hidden states of one layer for
all batches are all that is kept, so a model larger than memory can be walked; with every layer in memory the
numbers are the ones a full forward pass computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from ..data.calibration import CalibrationBatch
from ..utils.system_memory import return_freed_memory
from .layers import decoder_layers
from .offload import materialized


@dataclass
class LayerCall:
    """The inputs of one decoder layer for one calibration batch: its hidden states (recorded for the first layer
    only) and its keyword arguments."""

    hidden_states: torch.Tensor | None
    kwargs: dict[str, Any]


def first_output(output: Any) -> torch.Tensor:
    """The hidden states of a decoder layer's output (a tensor, or a tuple starting with one)."""
    return output[0] if isinstance(output, tuple) else output


class _Recorded(Exception):
    """Raised by the last decoder layer's recorder: the pass has what it needs, the rest of the model is not run."""


def record_layer_calls(model: nn.Module, batches: Sequence[CalibrationBatch]) -> list[list[LayerCall]]:
    """`calls[layer][batch]`: the first layer's hidden states and every layer's keyword arguments, from one pass of
    the embeddings in which every decoder layer passes its input through unchanged (no layer weight is read); the pass
    stops at the last layer (the final norm and the head do not run)."""
    layers = decoder_layers(model)
    calls: list[list[LayerCall]] = [[] for _ in layers]

    def recorder(index: int):
        def forward(*args, **kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            rest = {key: value for key, value in kwargs.items() if key != "hidden_states"}
            calls[index].append(LayerCall(hidden if index == 0 else None, rest))
            if index == len(layers) - 1:
                raise _Recorded
            return hidden

        return forward

    own_forwards = [layer.__dict__.get("forward") for layer in layers]  # accelerate's hooked forward, if any
    for index, layer in enumerate(layers):
        layer.forward = recorder(index)
    device = model.get_input_embeddings().weight.device
    runner = model.base_model if hasattr(model, "base_model") else model
    try:
        with torch.no_grad():
            for batch in logging.tqdm(batches, desc="Recording layer inputs", unit="batch"):
                input_ids, attention_mask = batch.input_ids.to(device), batch.attention_mask.to(device)
                try:
                    runner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                except _Recorded:
                    pass
    finally:
        for layer, forward in zip(layers, own_forwards):
            if forward is None:
                del layer.forward
            else:
                layer.forward = forward
    return calls


LayerStep = Callable[[int, nn.Module, list[torch.Tensor], list[LayerCall]], list[torch.Tensor]]


def walk_layers(model: nn.Module, batches: Sequence[CalibrationBatch], step: LayerStep, desc: str) -> None:
    """Run `step(index, layer, inputs, calls)` on every decoder layer in order, the layer held in memory; the
    hidden states it returns (one tensor per batch) are the inputs of the next layer.

    Args:
        model (`PreTrainedModel`):
            A causal LM; its decoder layers may be offloaded by accelerate.
        batches (`Sequence[CalibrationBatch]`):
            The calibration batches walked.
        step (`Callable`):
            Given the layer index, the layer, its inputs (one hidden-state tensor per batch) and its recorded calls,
            does its work and returns the layer's outputs (usually `layer(inputs[i], **calls[i].kwargs)`, after
            quantizing it or not).
        desc (`str`):
            Title of the progress bar.
    """
    layers = decoder_layers(model)
    with torch.no_grad():
        calls = record_layer_calls(model, batches)
        hidden = [call.hidden_states for call in calls[0]]
        for index in logging.tqdm(range(len(layers)), desc=desc, unit="layer"):
            with materialized(layers[index]):
                hidden = step(index, layers[index], hidden, calls[index])
            calls[index] = []
            return_freed_memory()


def run_layer(layer: nn.Module, inputs: Sequence[torch.Tensor], calls: Sequence[LayerCall]) -> list[torch.Tensor]:
    """`layer`'s outputs on each batch of its recorded inputs."""
    return [first_output(layer(states, **call.kwargs)) for states, call in zip(inputs, calls)]
