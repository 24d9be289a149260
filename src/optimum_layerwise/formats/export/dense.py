"""The dense copy of a layer-wise model that exports start from: every packed Linear replaced by a float Linear holding
its dequantized weight, without the layer-wise quantizer (so it saves as a plain model)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

from ...model.layers import set_submodule
from ...quantize.swapping import dequantized_linear


def packed_linears(model: nn.Module) -> dict[str, nn.Module]:
    """The packed Linear modules of the layer-wise `model`, by name, in its plan's order; a clear error for a model
    that is not layer-wise quantized or whose plan names a module it does not hold packed."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    plan = getattr(config, "plan", None)
    if plan is None or not hasattr(config, "quantization_backend"):
        raise ValueError("Only a layer-wise quantized model (quantization_config with a plan) can be exported.")
    backend = config.quantization_backend()
    modules = dict(model.named_modules())
    missing = [name for name in plan.modules if name not in modules or not backend.is_packed(modules[name])]
    if missing:
        raise ValueError(f"The plan quantizes {missing[:3]}, which the model does not hold packed: nothing to export.")
    return {name: modules[name] for name in plan.modules}


def dense_copy(model: nn.Module, linears: Mapping[str, nn.Module]) -> nn.Module:
    """A copy of `model` whose `linears` are float Linears holding the dequantized weights (in each module's dtype),
    without the layer-wise quantizer and its save hooks; `model` is left unchanged."""
    backend = model.config.quantization_config.quantization_backend()
    memo = {id(module): None for module in linears.values()}  # never copied: replaced right below
    dense = copy.deepcopy(model, memo)
    for name, module in linears.items():
        dtype = getattr(module, "compute_dtype", None) or model.dtype
        set_submodule(dense, name, dequantized_linear(module, backend, dtype))
    for hook in ("save_pretrained", "_upload_modified_files"):  # the layer-wise card hooks (optimum_layerwise.hub)
        dense.__dict__.pop(hook, None)
    dense.hf_quantizer = None
    dense.config = copy.deepcopy(model.config)
    del dense.config.quantization_config
    return dense


def copy_companions(files: Sequence[Path], folder: Path) -> None:
    """Copy `files` (the tokenizer's, ...) into `folder`, except names the export itself wrote there."""
    for path in files:
        if not (folder / path.name).exists():
            shutil.copyfile(path, folder / path.name)
