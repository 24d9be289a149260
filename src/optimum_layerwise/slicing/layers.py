"""Decoder layers whose residual stream changes width: the shortcut matrices and the forward that applies them.

In a sliced model the residual stream entering layer `i` has `widths[i]` channels (in the basis of that layer's
input), the stream after its attention has the same number of channels in another basis, and the stream it hands to
the next layer has the next layer's width. The residual branches therefore go through two Linear modules without
bias, `attn_shortcut` and `mlp_shortcut` (SliceGPT's `Q_inᵀ Q_mid` and `Q_midᵀ Q_next`), and the layer's class is
swapped for a subclass whose forward adds them. The subclass keeps the class name (accelerate's `no_split` rules and
transformers' output recording match it), and every other module and parameter name is unchanged, so a sliced
checkpoint's tensors have the original names with smaller shapes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..model.layers import text_config
from ..model.walk import first_output
from ..plan.slicing_plan import SlicingPlan
from .architecture import ATTENTION_WRITER, MLP_WRITER, NORM_READERS, final_norm


class ShortcutResidualForward:
    """The forward of a pre-norm decoder layer with a shortcut Linear on each residual branch."""

    attn_shortcut: nn.Linear
    mlp_shortcut: nn.Linear

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        residual = self.attn_shortcut(hidden_states)
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = residual + first_output(self.self_attn(hidden_states=hidden_states, **kwargs))
        residual = self.mlp_shortcut(hidden_states)
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states


def residual_path(layer: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """`hidden_states` (a decoder layer's input) carried along the layer's residual path: through both shortcuts of a
    sliced layer (into the basis and width of its output), unchanged for any other layer."""
    if isinstance(layer, ShortcutResidualForward):
        return layer.mlp_shortcut(layer.attn_shortcut(hidden_states))
    return hidden_states


_SLICED_CLASSES: dict[type, type] = {}


def sliced_layer_class(layer_class: type) -> type:
    """The subclass of `layer_class` with [`ShortcutResidualForward`]'s forward (one per class, same name)."""
    if issubclass(layer_class, ShortcutResidualForward):
        return layer_class
    if layer_class not in _SLICED_CLASSES:
        _SLICED_CLASSES[layer_class] = type(
            layer_class.__name__,
            (ShortcutResidualForward, layer_class),
            {"__module__": __name__, "__qualname__": layer_class.__qualname__},
        )
    return _SLICED_CLASSES[layer_class]


def install_shortcuts(layer: nn.Module, attn_shortcut: torch.Tensor, mlp_shortcut: torch.Tensor) -> None:
    """Give `layer` its two shortcut matrices (`in × out`, applied as `x @ matrix`) and the forward that uses them."""
    for name, matrix in (("attn_shortcut", attn_shortcut), ("mlp_shortcut", mlp_shortcut)):
        linear = nn.Linear(matrix.shape[0], matrix.shape[1], bias=False, device=matrix.device, dtype=matrix.dtype)
        linear.weight = nn.Parameter(matrix.T.contiguous())
        layer.add_module(name, linear)
    layer.__class__ = sliced_layer_class(type(layer))


def set_norm_width(norm: nn.Module, width: int, hidden_size: int) -> None:
    """Make `norm` (an RMSNorm whose scale was fused into its readers) normalize `width` channels as if they were
    the full `hidden_size`: its weight becomes `sqrt(hidden_size / width)` (exactly 1 when nothing is sliced)."""
    weight = norm.weight
    scale = math.sqrt(hidden_size / width)
    norm.weight = nn.Parameter(torch.full((width,), scale, dtype=weight.dtype, device=weight.device))


def _resize(module: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(torch.empty(shape, dtype=old.dtype, device=old.device), old.requires_grad))


def _resize_linear(linear: nn.Linear, in_features: int | None = None, out_features: int | None = None) -> None:
    linear.in_features = in_features or linear.in_features
    linear.out_features = out_features or linear.out_features
    _resize(linear, "weight", (linear.out_features, linear.in_features))
    if linear.bias is not None:
        _resize(linear, "bias", (linear.out_features,))


def resize_for_widths(model: nn.Module, layers: nn.ModuleList, plan: SlicingPlan) -> None:
    """Give an unsliced model (normally on the meta device, before a sliced checkpoint's weights load) the shapes of
    one sliced by `plan`, shortcut modules included; the values are uninitialized."""
    if plan.embeddings_rotated:
        embeddings = model.get_input_embeddings()
        embeddings.embedding_dim = plan.widths[0]
        _resize(embeddings, "weight", (embeddings.num_embeddings, plan.widths[0]))
        _resize(final_norm(model), "weight", (plan.head_width,))
        _resize_linear(model.get_output_embeddings(), in_features=plan.head_width)
    for index, layer in enumerate(layers):
        width, in_width, out_width = plan.widths[index], plan.input_width(index), plan.output_width(index)
        _resize(layer.input_layernorm, "weight", (in_width,))
        _resize(layer.post_attention_layernorm, "weight", (width,))
        for reader in NORM_READERS["input_layernorm"]:
            _resize_linear(layer.get_submodule(reader), in_features=in_width)
        for reader in NORM_READERS["post_attention_layernorm"]:
            _resize_linear(layer.get_submodule(reader), in_features=width)
        _resize_linear(layer.get_submodule(ATTENTION_WRITER), out_features=width)
        _resize_linear(layer.get_submodule(MLP_WRITER), out_features=out_width)
        like = layer.get_submodule(ATTENTION_WRITER).weight
        install_shortcuts(
            layer,
            torch.empty((in_width, width), dtype=like.dtype, device=like.device),
            torch.empty((width, out_width), dtype=like.dtype, device=like.device),
        )


def ties_embeddings(model: nn.Module) -> bool:
    """Whether `lm_head` shares the input embeddings' weight."""
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    return head.weight is embeddings.weight or head.weight.data_ptr() == embeddings.weight.data_ptr()


def untie_output_embeddings(model: nn.Module) -> None:
    """Give `lm_head` its own weight when it shares the input embeddings' (the two are rotated differently)."""
    if ties_embeddings(model):
        head = model.get_output_embeddings()
        head.weight = nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    for config in {id(c): c for c in (model.config, text_config(model))}.values():
        config.tie_word_embeddings = False


def rebuild_sliced_shapes(model: nn.Module, layers: nn.ModuleList, plan: SlicingPlan) -> None:
    """Before a sliced checkpoint's weights load: untie the head when the plan rotated it, then
    [`resize_for_widths`]."""
    if plan.embeddings_rotated:
        untie_output_embeddings(model)
    resize_for_widths(model, layers, plan)
