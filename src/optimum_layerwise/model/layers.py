"""Find the decoder layers of a causal LM and the Linear modules inside them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn


def text_config(model: nn.Module) -> Any:
    """The configuration of the model's text decoder (its `config` for a text-only model), or `None` without one."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def _num_hidden_layers(model: nn.Module) -> int | None:
    return getattr(text_config(model), "num_hidden_layers", None)


def decoder_layers_path(model: nn.Module) -> str:
    """Dotted name of the `nn.ModuleList` holding the decoder layers, e.g. `"model.layers"`.

    The list is the model's only `nn.ModuleList` whose length is `config.num_hidden_layers` (a list named `layers`
    wins when there are several), which covers Llama, Mistral, Qwen2, Gemma3 and most causal LMs in transformers.

    Args:
        model (`nn.Module`):
            A transformers model with a `config`.

    Returns:
        `str`: the dotted module name.

    Raises:
        `ValueError`: if no such list exists.
    """
    num_layers = _num_hidden_layers(model)
    candidates = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and num_layers is not None and len(module) == num_layers
    ]
    named_layers = [name for name in candidates if name.split(".")[-1] in ("layers", "h", "blocks")]
    chosen = named_layers or candidates
    if len(chosen) != 1:
        found = "none" if not chosen else ", ".join(chosen)
        raise ValueError(
            f"Cannot find the decoder layers of {type(model).__name__}: layer-wise quantization needs exactly one "
            f"nn.ModuleList of length config.num_hidden_layers={num_layers} (found {found})."
        )
    return chosen[0]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder layers, see [`decoder_layers_path`]."""
    return model.get_submodule(decoder_layers_path(model))


def is_skipped(name: str, skip: Iterable[str]) -> bool:
    """Whether the module `name` (full dotted name) is matched by a `modules_to_not_convert` entry in `skip`."""
    parts = name.split(".")
    return any(pattern == name or pattern in parts or name.endswith("." + pattern) for pattern in skip)


def is_float_linear(module: nn.Module) -> bool:
    """Whether `module` is a full-precision `nn.Linear`: one whose `weight` is an `(out, in)` float matrix.

    Packed modules may subclass `nn.Linear` so that stock tools (PEFT) adapt them; they declare `is_packed = True`
    (as [`~optimum_layerwise.quantize.modules.QuantoLinear`] does) and are not float Linears to quantize, score or
    slice.
    """
    return isinstance(module, nn.Linear) and not getattr(module, "is_packed", False)


def linear_modules(layer: nn.Module, skip: Iterable[str] = (), prefix: str = "") -> dict[str, nn.Linear]:
    """The full-precision `nn.Linear` modules ([`is_float_linear`]) of one decoder layer, by name relative to it.

    Args:
        layer (`nn.Module`):
            One decoder layer.
        skip (`Iterable[str]`, *optional*):
            Module names to leave out: a full dotted name (`"model.layers.0.mlp.gate_proj"`), a name suffix
            (`"mlp.gate_proj"`) or a single component (`"gate_proj"`), as transformers' `modules_to_not_convert`.
        prefix (`str`, *optional*):
            Dotted name of the layer in the model, used to match full names in `skip`.

    Returns:
        `dict[str, nn.Linear]`.
    """
    skip = list(skip)
    return {
        name: module
        for name, module in layer.named_modules()
        if is_float_linear(module) and not is_skipped(f"{prefix}.{name}" if prefix else name, skip)
    }


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule `name` (dotted, relative to `root`) by `module`."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def vocab_size(model: nn.Module) -> int | None:
    """Number of token ids the model's input embedding accepts (`None` when it has none)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return getattr(embeddings, "num_embeddings", None)


def quantizable_linears(
    model: nn.Module, skip: Iterable[str]
) -> Iterator[tuple[int, nn.Module, dict[str, nn.Linear]]]:
    """Yield `(index, layer, {name: Linear})` for every decoder layer, leaving out `skip`.

    Raises:
        `ValueError`: when `skip` leaves a decoder layer without any Linear module to quantize.
    """
    path = decoder_layers_path(model)
    for index, layer in enumerate(model.get_submodule(path)):
        linears = linear_modules(layer, skip, prefix=f"{path}.{index}")
        if not linears:
            raise ValueError(
                f"Decoder layer {index} has no Linear module left to quantize (see `modules_to_not_convert`)."
            )
        yield index, layer, linears


def linear_shapes(model: nn.Module, skip: Iterable[str]) -> list[tuple[int, str, int]]:
    """`(layer_index, full_module_name, in_features)` of every Linear to quantize, as
    [`~optimum_layerwise.quantize.backends.base.resolve_modules`] takes them."""
    path = decoder_layers_path(model)
    return [
        (index, f"{path}.{index}.{name}", linear.in_features)
        for index, _, linears in quantizable_linears(model, skip)
        for name, linear in linears.items()
    ]


@dataclass(frozen=True)
class AllocationUnit:
    """Linear modules of one decoder layer that get one bit width together.

    Args:
        layer (`int`): Index of the decoder layer.
        name (`str`): Full dotted name of what the unit is: the layer, one of its blocks, or the module itself.
        members (`tuple[str, ...]`): The unit's Linear modules, by name relative to the layer.
    """

    layer: int
    name: str
    members: tuple[str, ...]


def allocation_units(model: nn.Module, skip: Iterable[str], granularity: str) -> list[AllocationUnit]:
    """What bits are allocated to, in layer order: each decoder layer (`"layer"`), each block of a layer, i.e. the
    first component of its Linear modules' names such as `self_attn` and `mlp` (`"block"`), or each Linear
    (`"module"`)."""
    path = decoder_layers_path(model)
    units = []
    for index, _, linears in quantizable_linears(model, skip):
        groups: dict[str, list[str]] = {}
        for name in linears:
            key = {"layer": "", "block": name.split(".")[0], "module": name}[granularity]
            groups.setdefault(key, []).append(name)
        units += [
            AllocationUnit(index, f"{path}.{index}.{key}" if key else f"{path}.{index}", tuple(members))
            for key, members in groups.items()
        ]
    return units
