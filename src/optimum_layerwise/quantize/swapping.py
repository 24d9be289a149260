"""Every decoder layer's Linear modules in full precision and, built on first use, at each bit width, swapped in on
request. Lets measurements and sweeps try many bit maps while quantizing each layer once per level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..model.footprint import tensor_nbytes
from ..model.layers import decoder_layers, linear_modules, set_submodule
from .backends import QuantizationBackend, get_backend


def dequantized_linear(module: nn.Module, backend: QuantizationBackend, dtype: torch.dtype) -> nn.Linear:
    """A float `nn.Linear` holding the weight of the packed `module` dequantized by `backend`, in `dtype`."""
    linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
    linear.weight = nn.Parameter(backend.dequantized_weight(module).to(dtype), requires_grad=False)
    if module.bias is not None:
        linear.bias = nn.Parameter(module.bias.detach().to(dtype), requires_grad=False)
    return linear


class LayerVersions:
    """Swappable versions of a model's decoder-layer Linear modules.

    Args:
        model (`PreTrainedModel`):
            A full-precision model; its Linear modules are kept as the full-precision versions.
        backend (`str` or [`~optimum_layerwise.backends.QuantizationBackend`]):
            Backend that builds the quantized versions.
        group_size (`int`, *optional*):
            Requested group size (the backend's `module_plan` adapts it to each layer and level).
        skip (`Sequence[str]`, *optional*):
            Linear modules that always stay in full precision.
        simulate (`bool`, *optional*, defaults to `False`):
            Put float `nn.Linear` modules holding the dequantized weights in place instead of the packed modules: the
            same numbers (quanto dequantizes before its float matmul on CPU; a test checks the logits are equal) at
            full-precision speed, for sweeps that evaluate many bit maps. [`nbytes`] still counts packed bytes.
    """

    def __init__(
        self,
        model: nn.Module,
        backend: str | QuantizationBackend,
        group_size: int | None,
        skip: Sequence[str] = (),
        simulate: bool = False,
    ):
        self.backend = backend if isinstance(backend, QuantizationBackend) else get_backend(backend)
        self.group_size = group_size
        self.simulate = simulate
        self.model = model
        self.layers = decoder_layers(model)
        self.originals = [dict(linear_modules(layer, skip)) for layer in self.layers]
        self.cache: dict[tuple[int, int], dict[str, nn.Module]] = {}
        self.full_precision_nbytes = tensor_nbytes(model)

    def _group_size(self, linear: nn.Linear, bits: int) -> int | None:
        return self.backend.module_plan(linear.in_features, bits, self.group_size).group_size

    def quantized(self, index: int, bits: int) -> dict[str, nn.Module]:
        """The packed Linear modules of layer `index` at `bits` (quantized once by round-to-nearest, then cached)."""
        if (index, bits) not in self.cache:
            with torch.no_grad():
                packed = {
                    name: self.backend.quantize_linear(linear, bits, self._group_size(linear, bits))
                    for name, linear in self.originals[index].items()
                }
            self.use_versions({(index, bits): packed})
        return self.cache[index, bits]

    def release(self, index: int) -> None:
        """Forget the quantized versions of layer `index` built so far (they are built again if asked for)."""
        for key in [key for key in self.cache if key[0] == index]:
            del self.cache[key]

    def use_versions(self, versions: Mapping[tuple[int, int], Mapping[str, nn.Module]]) -> None:
        """Take packed modules quantized elsewhere (e.g. calibrated by GPT-Q) as the versions of their layers and
        levels: `{(layer, bits): {name: packed module}}`."""
        for (index, bits), packed in versions.items():
            if self.simulate:
                dtypes = {name: linear.weight.dtype for name, linear in self.originals[index].items()}
                packed = {name: dequantized_linear(m, self.backend, dtypes[name]) for name, m in packed.items()}
            self.cache[index, bits] = dict(packed)

    def nbytes(self, layer_bits: Mapping[int, int] | None, layers: Sequence[int] | None = None) -> int:
        """Bytes of the model with every layer at its bits (packed format), keeping only `layers` (default: all)."""
        kept = range(len(self.layers)) if layers is None else layers
        total = self.full_precision_nbytes - sum(
            tensor_nbytes(self.layers[i]) for i in range(len(self.layers)) if i not in kept
        )
        if layer_bits is None:
            return total
        for index in kept:
            for linear in self.originals[index].values():
                weight = linear.weight
                bits = layer_bits[index]
                packed = self.backend.packed_nbytes(
                    linear.out_features, linear.in_features, bits, self.group_size, weight.dtype
                )
                total += packed - weight.numel() * weight.element_size()
        return total

    def put(self, index: int, bits: int | None, names: Sequence[str] | None = None) -> None:
        """Put layer `index` (only its Linear modules `names`, when given) at `bits` (`None` = full precision)."""
        modules = self.originals[index] if bits is None else self.quantized(index, bits)
        for name in modules if names is None else names:
            set_submodule(self.layers[index], name, modules[name])

    def apply(self, layer_bits: Mapping[int, int] | None) -> None:
        """Put every layer at its bits (`None` = every layer in full precision)."""
        for index in range(len(self.layers)):
            self.put(index, None if layer_bits is None else layer_bits[index])
