"""Loading a saved layer-wise checkpoint: build the packed modules on meta, check the files against the plan."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from ..model.layers import decoder_layers, decoder_layers_path, linear_shapes, quantizable_linears, set_submodule
from ..plan.fields import check_layer_bits
from ..plan.quantization_plan import QuantizationPlan
from ..quantize.backends.base import resolve_modules
from ..utils.checksums import CHECKSUMS_NAME, safetensors_header, verify_checksums
from .config import LayerwiseQuantizationConfig


_SAFETENSORS_DTYPES = {
    "I8": torch.int8,
    "U8": torch.uint8,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}
_DTYPE_NAMES = {dtype: name for name, dtype in _SAFETENSORS_DTYPES.items()}
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


def replace_with_packed_modules(
    model: nn.Module, config: LayerwiseQuantizationConfig, skip: list[str]
) -> tuple[QuantizationPlan, dict[str, tuple[tuple[int, ...], torch.dtype | None]]]:
    """Swap every quantized Linear of the (meta) model for an empty packed module, as the saved plan says.

    Args:
        model (`PreTrainedModel`):
            The model skeleton, on the meta device.
        config ([`LayerwiseQuantizationConfig`]):
            The saved config; must hold a `plan`.
        skip (`list[str]`):
            Linear modules that were kept in full precision.

    Returns:
        `tuple`: the plan (with its modules resolved, for a checkpoint saved before plans listed them), and the
        expected `(shape, dtype)` of every packed tensor by its state-dict name (`None` dtype = float).

    Raises:
        `ValueError`: when the checkpoint has no plan, or its plan does not match the model's modules.
    """
    plan = config.plan
    if plan is None:
        raise ValueError("This checkpoint's quantization_config has no `plan`: it was not saved after quantization.")
    backend = config.quantization_backend()
    backend.require()
    shapes = linear_shapes(model, skip)
    if not plan.modules:  # saved before plans listed their modules: the same rule resolves them
        check_layer_bits(plan.layer_bits, len(decoder_layers(model)), config.bits, "plan.layer_bits")
        modules = resolve_modules(shapes, plan.layer_bits, backend, config.group_size)
        plan = plan.replace(layers_path=decoder_layers_path(model), modules=modules)
    if plan.layers_path != decoder_layers_path(model):
        raise ValueError(
            f"The checkpoint's plan puts the decoder layers at `plan.layers_path`={plan.layers_path!r:.80}; this "
            f"model has them at {decoder_layers_path(model)!r} (config.json edited, or another architecture)."
        )
    _check_plan_modules(plan, {name for _, name, _ in shapes})
    expected = {}
    for index, layer, linears in quantizable_linears(model, skip):
        for name, linear in linears.items():
            full_name = f"{plan.layers_path}.{index}.{name}"
            settings = plan.modules[full_name]
            bits, group_size = settings.bits, settings.group_size
            module = backend.empty_linear(
                linear.in_features, linear.out_features, bits, group_size, linear.bias is not None, linear.weight.dtype
            )
            set_submodule(layer, name, module)
            specs = backend.tensor_specs(linear.out_features, linear.in_features, bits, group_size)
            expected.update({f"{full_name}.{tensor}": spec for tensor, spec in specs.items()})
    return plan, expected


def _check_plan_modules(plan: QuantizationPlan, model_modules: set[str]) -> None:
    missing, unknown = sorted(model_modules - set(plan.modules)), sorted(set(plan.modules) - model_modules)
    if missing or unknown:
        details = [
            f"not in the plan: {missing[:3]}" if missing else "",
            f"not in the model: {unknown[:3]}" if unknown else "",
        ]
        raise ValueError(
            "The checkpoint's plan does not match the model's Linear modules (another architecture, or "
            f"`modules_to_not_convert` changed): {'; '.join(d for d in details if d)}."
        )


def expected_tensors(
    model: nn.Module, packed: dict[str, tuple[tuple[int, ...], torch.dtype | None]]
) -> dict[str, tuple[tuple[int, ...], torch.dtype | None]]:
    """Every tensor a layer-wise checkpoint of `model` must hold: the packed ones (`packed`, from
    [`replace_with_packed_modules`]) and every other entry of the model's state dict (embeddings, norms, `lm_head`,
    biases), except weights tied to another one. A `None` dtype stands for any floating-point dtype."""
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    expected = {
        name: (tuple(tensor.shape), None if tensor.is_floating_point() else tensor.dtype)
        for name, tensor in model.state_dict().items()
        if name not in tied
    }
    expected.update(packed)
    return expected


def check_checkpoint(
    checkpoint_files: Sequence[str], expected: dict[str, tuple[tuple[int, ...], torch.dtype | None]]
) -> dict[str, torch.dtype]:
    """Check that the safetensors files hold every expected tensor with its shape and dtype (see
    [`expected_tensors`]). Only the file headers are read.

    Raises:
        `ValueError`: naming the first tensors that are missing or do not match.
    """
    found = {}
    for path in checkpoint_files:
        if not str(path).endswith(".safetensors"):
            raise ValueError(f"Layer-wise checkpoints are stored as safetensors; cannot check {path}.")
        header, _ = safetensors_header(path)  # names the file when it is not a whole safetensors file
        for key, info in header.items():
            if key in expected and isinstance(info, dict):
                found[key] = (tuple(info.get("shape", ())), info.get("dtype"))
    problems = []
    for key, (shape, dtype) in expected.items():
        if key not in found:
            problems.append(f"{key} is missing")
            continue
        saved_shape, saved_dtype = found[key]
        dtype_ok = saved_dtype in _FLOAT_DTYPES if dtype is None else _SAFETENSORS_DTYPES.get(saved_dtype) == dtype
        if saved_shape != shape or not dtype_ok:
            needed = "float" if dtype is None else _DTYPE_NAMES.get(dtype, str(dtype))
            problems.append(f"{key} is {saved_shape} {saved_dtype}, the model needs {shape} {needed}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(
            "The checkpoint does not match its model and quantization_config (plan: bits, group sizes): "
            + "; ".join(problems[:3])
            + more
            + "."
        )
    return {key: _SAFETENSORS_DTYPES[dtype] for key, (_, dtype) in found.items() if dtype in _SAFETENSORS_DTYPES}


def adopt_saved_float_dtypes(
    model: nn.Module,
    packed: dict[str, tuple[tuple[int, ...], torch.dtype | None]],
    saved_dtypes: dict[str, torch.dtype],
) -> None:
    """Give the packed tensors that may be of any float dtype (quanto's scales and shifts) the dtype they were saved
    in: transformers casts a loaded tensor to its parameter's dtype, and a checkpoint written with float32 scales must
    load them unrounded.

    Args:
        model (`PreTrainedModel`):
            The model skeleton after [`replace_with_packed_modules`].
        packed (`dict`):
            The packed tensors and their expected `(shape, dtype)`, as [`replace_with_packed_modules`] returns them.
        saved_dtypes (`dict[str, torch.dtype]`):
            Dtype of every checked tensor in the checkpoint, as [`check_checkpoint`] returns them.
    """
    for name, (_, dtype) in packed.items():
        if dtype is not None or name not in saved_dtypes:
            continue
        module_name, _, tensor_name = name.rpartition(".")
        module = model.get_submodule(module_name)
        current = getattr(module, tensor_name)
        if current.dtype != saved_dtypes[name]:
            empty = torch.empty(current.shape, dtype=saved_dtypes[name], device=current.device)
            setattr(module, tensor_name, nn.Parameter(empty, requires_grad=False))


def verify_checkpoint_files(checkpoint_files: Sequence[str], name_or_path: str | None = None) -> None:
    """Check the folder of `checkpoint_files` against its sha256 manifest (`layerwise_checksums.json`), downloading
    the manifest from the Hub repo `name_or_path` when the folder is a Hub cache snapshot without it.

    Raises:
        `ValueError`: listing what differs, or when there is no manifest.
    """
    folder = os.path.dirname(os.path.abspath(checkpoint_files[0]))
    if not os.path.isfile(os.path.join(folder, CHECKSUMS_NAME)) and name_or_path and not os.path.isdir(name_or_path):
        from huggingface_hub import hf_hub_download

        hf_hub_download(name_or_path, CHECKSUMS_NAME)  # lands in the same snapshot folder
    problems = verify_checksums(folder)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError("Checksum verification failed: " + "; ".join(problems[:5]) + more + ".")
