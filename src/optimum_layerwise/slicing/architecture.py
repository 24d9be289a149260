"""Which models can be sliced, and where their norms, embeddings and residual-stream Linears are.

Slicing rotates the residual stream, so every module that reads it must be a Linear behind an RMSNorm whose scale can
move into that Linear, and every module that writes it must be a Linear. That is the pre-norm decoder layer of Llama,
Mistral, Qwen2 and Qwen3. Gemma 3 normalizes the attention and MLP outputs before they join the residual stream
(`post_attention_layernorm`, `post_feedforward_layernorm`): an elementwise scale after a rotation is not a scale, so
Gemma models are refused.
"""

from __future__ import annotations

from torch import nn

from ..model.layers import decoder_layers, decoder_layers_path, text_config


SLICEABLE_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")

# each RMSNorm of a decoder layer and the Linears that read its output (the residual stream's readers)
NORM_READERS = {
    "input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj"),
}
# the Linears that write into the residual stream, after the attention and after the MLP
ATTENTION_WRITER = "self_attn.o_proj"
MLP_WRITER = "mlp.down_proj"


def hidden_size(model: nn.Module) -> int:
    """Width of the model's residual stream before slicing (`config.hidden_size`)."""
    return text_config(model).hidden_size


def final_norm(model: nn.Module) -> nn.Module:
    """The RMSNorm between the last decoder layer and `lm_head` (`model.norm` next to `model.layers`)."""
    parent = decoder_layers_path(model).rpartition(".")[0]
    return model.get_submodule(f"{parent}.norm" if parent else "norm")


def _is_rms_norm(module: nn.Module, width: int) -> bool:
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__.endswith("RMSNorm")
        and isinstance(weight, nn.Parameter)
        and weight.dim() == 1
        and getattr(module, "bias", None) is None
        and weight.shape[0] == width
    )


def check_sliceable(model: nn.Module) -> None:
    """Raise a `ValueError` naming what stands in the way when `model` cannot be sliced.

    Args:
        model (`PreTrainedModel`):
            A causal LM in full precision.
    """
    model_type = getattr(text_config(model), "model_type", None)
    if model_type is not None and model_type.startswith("gemma"):
        raise ValueError(
            f"Cannot slice a {model_type} model: Gemma normalizes the attention and MLP outputs before they join the "
            "residual stream, and a rotated residual stream cannot pass through those norms' scales. Slicing "
            f"supports {', '.join(SLICEABLE_MODEL_TYPES)} models; use layer-wise quantization for Gemma."
        )
    if model_type not in SLICEABLE_MODEL_TYPES:
        raise ValueError(
            f"Cannot slice a model of type {model_type!r}: slicing supports {', '.join(SLICEABLE_MODEL_TYPES)} "
            "(pre-norm decoder layers whose residual stream is read and written by Linear modules only)."
        )
    width = hidden_size(model)
    if not isinstance(model.get_input_embeddings(), nn.Embedding):
        raise ValueError("Cannot slice: the input embeddings are not an nn.Embedding.")
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or head.bias is not None:
        raise ValueError("Cannot slice: the output head is not a Linear without bias.")
    if not _is_rms_norm(final_norm(model), width):
        raise ValueError("Cannot slice: the norm before the output head is not an RMSNorm of the hidden size.")
    for index, layer in enumerate(decoder_layers(model)):
        for norm_name, readers in NORM_READERS.items():
            norm = getattr(layer, norm_name, None)
            if norm is None or not _is_rms_norm(norm, width):
                raise ValueError(
                    f"Cannot slice: decoder layer {index} has no RMSNorm `{norm_name}` of the hidden size."
                )
            for name in (*readers, ATTENTION_WRITER, MLP_WRITER):
                try:
                    linear = layer.get_submodule(name)
                except AttributeError:
                    linear = None
                if type(linear) is not nn.Linear:
                    raise ValueError(f"Cannot slice: decoder layer {index} has no nn.Linear `{name}`.")
        others = [name for name, _ in layer.named_children() if name not in NORM_READERS and "norm" in name.lower()]
        if others:
            raise ValueError(
                f"Cannot slice: decoder layer {index} has extra norms {others} on its residual path, which a rotation "
                "cannot pass through."
            )
