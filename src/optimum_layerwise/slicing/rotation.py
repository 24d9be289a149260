"""Rotate the residual stream of a model by the principal axes of its calibration hidden states, and slice it.

SliceGPT's computational invariance: once every RMSNorm's scale is fused into the Linears that read its output, an
RMSNorm commutes with any orthogonal `Q` (`RMSNorm(x Q) = RMSNorm(x) Q`), so multiplying the embeddings and every
residual-stream writer by `Q` on the output side, and every reader by `Q` on the input side, leaves the model's
function unchanged. With `Q` the eigenvectors of the hidden states' second moment (descending eigenvalues), the last
channels carry the least energy, and dropping them ("slicing") removes rows and columns of every such matrix.

Each decoder layer gets two bases: one for its input (shared with the previous layer's output) and one for the
stream after its attention. Both come from the hidden states of the already-sliced model up to that point, walked
one layer at a time ([`~optimum_layerwise.walk.walk_layers`]), with second moments accumulated in float64 over the
tokens that are not padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data.calibration import CalibrationBatch
from ..model.layers import decoder_layers
from ..model.walk import LayerCall, first_output, run_layer, walk_layers
from ..plan.slicing_plan import SlicingPlan
from .architecture import ATTENTION_WRITER, MLP_WRITER, NORM_READERS, final_norm, hidden_size
from .layers import install_shortcuts, set_norm_width, untie_output_embeddings


def _scale_inputs(linear: nn.Linear, scale: torch.Tensor) -> None:
    linear.weight.data = (linear.weight.data.double() * scale.double()).to(linear.weight.dtype)


def fuse_norm_scales(model: nn.Module, include_head: bool = True) -> None:
    """Move each RMSNorm's scale into the Linears that read its output, and set the scale to 1 (the final norm's
    into `lm_head` only with `include_head`)."""
    layers = decoder_layers(model)
    pairs = [(getattr(layer, norm), [layer.get_submodule(r) for r in readers]) for layer in layers
             for norm, readers in NORM_READERS.items()]  # fmt: skip
    if include_head:
        pairs.append((final_norm(model), [model.get_output_embeddings()]))
    for norm, readers in pairs:
        for reader in readers:
            _scale_inputs(reader, norm.weight.data)
        norm.weight.data.fill_(1.0)


def principal_axes(second_moment: torch.Tensor) -> torch.Tensor:
    """Orthogonal matrix whose columns are the eigenvectors of a symmetric `second_moment`, by descending eigenvalue
    (float64)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(second_moment.double())
    return eigenvectors[:, torch.argsort(eigenvalues, descending=True)]


class SecondMoment:
    """Running `Σ xᵀx` (float64) over the hidden states of the tokens that are not padding."""

    def __init__(self, width: int):
        self.sum = torch.zeros(width, width, dtype=torch.float64)

    def add(self, states: torch.Tensor, mask: torch.Tensor) -> None:
        tokens = states[mask.to(states.device).bool()].double().cpu()
        self.sum += tokens.T @ tokens

    def axes(self) -> torch.Tensor:
        return principal_axes(self.sum)


def _multiply_weight(module: nn.Module, basis: torch.Tensor) -> None:
    """`W ← W · basis`, computed in float64, stored in the weight's dtype."""
    weight = module.weight.data
    module.weight = nn.Parameter(
        (weight.double() @ basis.to(weight.device)).to(weight.dtype), module.weight.requires_grad
    )


def rotate_inputs(linear: nn.Linear, basis: torch.Tensor) -> None:
    """`W ← W · basis` (the Linear reads `x · basis` instead of `x`): its input shrinks to `basis.shape[1]`."""
    _multiply_weight(linear, basis)
    linear.in_features = basis.shape[1]


def rotate_embeddings(embeddings: nn.Embedding, basis: torch.Tensor) -> None:
    """`E ← E · basis`: every token's embedding written in the rotated, sliced basis."""
    _multiply_weight(embeddings, basis)
    embeddings.embedding_dim = basis.shape[1]


def rotate_outputs(linear: nn.Linear, basis: torch.Tensor) -> None:
    """`W ← basisᵀ · W`, `b ← b · basis` (the Linear writes `y · basis`): its output shrinks to `basis.shape[1]`."""
    weight = linear.weight.data
    basis = basis.to(weight.device)
    linear.weight = nn.Parameter((basis.T @ weight.double()).to(weight.dtype), linear.weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter((linear.bias.data.double() @ basis).to(weight.dtype), linear.bias.requires_grad)
    linear.out_features = basis.shape[1]


def _in_basis(states: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    return (states.double() @ basis.to(states.device)).to(states.dtype)


def rotate_and_slice(model: nn.Module, plan: SlicingPlan, batches: Sequence[CalibrationBatch]) -> None:
    """Rotate `model` in place by the principal axes of its hidden states on `batches` and slice it to `plan`'s
    widths.

    Args:
        model (`PreTrainedModel`):
            A sliceable causal LM ([`~optimum_layerwise.slicing.architecture.check_sliceable`]) in full precision.
        plan ([`~optimum_layerwise.slicing.plan.SlicingPlan`]):
            The width of every stream; with `embeddings_rotated=False` the embeddings, the final norm and `lm_head`
            stay as they are.
        batches (`Sequence[CalibrationBatch]`):
            Calibration batches; their attention masks say which tokens count.
    """
    layers = decoder_layers(model)
    full = hidden_size(model)
    if plan.embeddings_rotated:
        untie_output_embeddings(model)
    fuse_norm_scales(model, include_head=plan.embeddings_rotated)
    masks = [batch.attention_mask for batch in batches]
    identity = torch.eye(full, dtype=torch.float64)
    bases: list[torch.Tensor] = []  # the full basis of the current layer's input (the last one only is kept)

    def second_moment(states: Sequence[torch.Tensor]) -> torch.Tensor:
        moment = SecondMoment(full)
        for hidden, mask in zip(states, masks):
            moment.add(hidden, mask)
        return moment.axes()

    def step(index: int, layer: nn.Module, inputs: list[torch.Tensor], calls: list[LayerCall]) -> list[torch.Tensor]:
        width, in_width, out_width = plan.widths[index], plan.input_width(index), plan.output_width(index)
        if index == 0:  # the embeddings write the first layer's input
            bases.append(second_moment(inputs) if plan.embeddings_rotated else identity)
            if plan.embeddings_rotated:
                rotate_embeddings(model.get_input_embeddings(), bases[0][:, :in_width])
                inputs = [_in_basis(states, bases[0][:, :in_width]) for states in inputs]
        basis_in = bases[-1][:, :in_width]
        for reader in NORM_READERS["input_layernorm"]:
            rotate_inputs(layer.get_submodule(reader), basis_in)
        set_norm_width(layer.input_layernorm, in_width, full)
        # the stream after the attention, in the original basis: the residual mapped back, plus the attention output
        attention = [
            first_output(layer.self_attn(hidden_states=layer.input_layernorm(states), **call.kwargs))
            for states, call in zip(inputs, calls)
        ]
        middle = [_in_basis(states, basis_in.T) + out for states, out in zip(inputs, attention)]
        basis_mid = second_moment(middle)[:, :width]
        rotate_outputs(layer.get_submodule(ATTENTION_WRITER), basis_mid)
        for reader in NORM_READERS["post_attention_layernorm"]:
            rotate_inputs(layer.get_submodule(reader), basis_mid)
        set_norm_width(layer.post_attention_layernorm, width, full)
        middle = [_in_basis(states, basis_mid) for states in middle]
        # the layer's output in the original basis: the residual mapped back, plus the MLP output
        outputs = [
            _in_basis(states, basis_mid.T) + layer.mlp(layer.post_attention_layernorm(states)) for states in middle
        ]
        last_kept = index + 1 == len(layers) and not plan.embeddings_rotated
        bases[:] = [identity if last_kept else second_moment(outputs)]
        basis_out = bases[-1][:, :out_width]
        rotate_outputs(layer.get_submodule(MLP_WRITER), basis_out)
        like = layer.get_submodule(ATTENTION_WRITER).weight
        install_shortcuts(
            layer,
            (basis_in.T @ basis_mid).to(like.dtype).to(like.device),
            (basis_mid.T @ basis_out).to(like.dtype).to(like.device),
        )
        return run_layer(layer, inputs, calls)

    walk_layers(model, batches, step, desc="Rotating and slicing")
    if plan.embeddings_rotated:
        set_norm_width(final_norm(model), plan.head_width, full)
        rotate_inputs(model.get_output_embeddings(), bases[-1][:, : plan.head_width])
