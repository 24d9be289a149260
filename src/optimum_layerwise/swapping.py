"""Every decoder layer's Linear modules in full precision and, built on first use, at each bit width, swapped in on
request. Lets measurements and sweeps try many bit maps while quantizing each layer once per level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .backends import get_backend
from .layers import decoder_layers, linear_modules, set_submodule
from .plan import effective_group_size


class LayerVersions:
    """Swappable versions of a model's decoder-layer Linear modules.

    Args:
        model (`PreTrainedModel`):
            A full-precision model; its Linear modules are kept as the full-precision versions.
        backend (`str`):
            Backend that builds the quantized versions.
        group_size (`int`, *optional*):
            Requested group size (see [`~optimum_layerwise.plan.effective_group_size`]).
        skip (`Sequence[str]`, *optional*):
            Linear modules that always stay in full precision.
    """

    def __init__(self, model: nn.Module, backend: str, group_size: int | None, skip: Sequence[str] = ()):
        self.backend = get_backend(backend)
        self.group_size = group_size
        self.layers = decoder_layers(model)
        self.originals = [dict(linear_modules(layer, skip)) for layer in self.layers]
        self.cache: dict[tuple[int, int], dict[str, nn.Module]] = {}

    def quantized(self, index: int, bits: int) -> dict[str, nn.Module]:
        """The packed Linear modules of layer `index` at `bits` (quantized once, then cached)."""
        if (index, bits) not in self.cache:
            with torch.no_grad():
                self.cache[index, bits] = {
                    name: self.backend.quantize_linear(
                        linear, bits, effective_group_size(linear.in_features, self.group_size)
                    )
                    for name, linear in self.originals[index].items()
                }
        return self.cache[index, bits]

    def put(self, index: int, bits: int | None) -> None:
        """Put layer `index` at `bits` (`None` = full precision)."""
        modules = self.originals[index] if bits is None else self.quantized(index, bits)
        for name, module in modules.items():
            set_submodule(self.layers[index], name, module)

    def apply(self, layer_bits: Mapping[int, int] | None) -> None:
        """Put every layer at its bits (`None` = every layer in full precision)."""
        for index in range(len(self.layers)):
            self.put(index, None if layer_bits is None else layer_bits[index])
