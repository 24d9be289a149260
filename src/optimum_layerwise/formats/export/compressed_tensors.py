"""A layer-wise model as a standard compressed-tensors checkpoint, which stock transformers, lm-eval and vLLM open
without `import optimum_layerwise`.

The plan becomes one compressed-tensors config group per (bits, group size), its `targets` naming that group's
modules (`re:^name$`), everything else left dense (`ignore: ["lm_head"]`), in the `pack-quantized` format. The
checkpoint is built by the compressed-tensors library itself: each packed Linear is replaced by a dense Linear holding
its dequantized weight, `apply_quantization_config` attaches the group's scheme, our scales are written into
`weight_scale`, and `ModelCompressor.compress_model` packs the codes it recovers from weight and scale.

Only symmetric grids convert without loss: int8 (always symmetric) and int2/int4 quantized with `sym=True`. An
affine quanto grid (`sym=False`, the default) has a fractional zero-point that compressed-tensors cannot store, and
its asymmetric `pack-quantized` checkpoints do not load in stock transformers (compressed-tensors 0.20.1 builds the
packed zero-point with the wrong shape), so [`export_compressed_tensors`] refuses them rather than write a different
model. Every export is checked: the codes compressed-tensors recovers must be ours, and the dequantized weights equal
ours to float rounding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers.utils import logging

from ...quantize.modules import QuantoLinear
from ...utils.atomic import atomic_folder
from ..model_card import CARD_NAME, build_export_card
from .dense import copy_companions, dense_copy, packed_linears


logger = logging.get_logger(__name__)

FORMAT = "pack-quantized"
_LOADING = (
    "from transformers import AutoModelForCausalLM\n\n"
    'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")  # or its Hub repo id'
)


def _symmetric_modules(model: nn.Module) -> dict[str, QuantoLinear]:
    """The packed Linears of a layer-wise optimum-quanto model, by name; a clear error for anything that does not
    convert without loss."""
    backend = getattr(getattr(getattr(model, "config", None), "quantization_config", None), "backend", "quanto")
    if backend != "quanto":
        raise ValueError(
            f"compressed-tensors export reads optimum-quanto checkpoints; this one is backend={backend!r}. GPT-Q "
            "layer-wise checkpoints are GPTQModel checkpoints already: `GPTQModel.load(folder)` and vLLM open them."
        )
    modules = packed_linears(model)  # raises for a model that is not layer-wise quantized
    plan = model.config.quantization_config.plan
    affine = [name for name in modules if not plan.modules[name].sym]
    if affine:
        raise ValueError(
            f"{len(affine)} modules (e.g. {affine[0]}) have affine int{modules[affine[0]].bits} grids (sym=False, "
            "quanto's default), which compressed-tensors cannot store without changing the weights. Quantize with "
            "`sym=True` (CLI: --sym) to export."
        )
    for name, module in modules.items():
        if module.bits < 8 and not _holds_symmetric_grid(module):
            raise ValueError(
                f"config.json says {name} is quantized on a symmetric grid (sym=true), but its weights hold an affine "
                "one (zero-points other than 2**(bits - 1)): the config was edited, or belongs to other weights."
            )
    return modules


def _holds_symmetric_grid(module: QuantoLinear) -> bool:
    """Whether an int2/int4 module's shifts are its symmetric grid's, `2**(bits - 1) · scale`."""
    scale, shift = module.weight_scale.float(), module.weight_shift.float()
    return torch.allclose(shift, 2 ** (module.bits - 1) * scale, rtol=1e-3, atol=0)


def _scheme(bits: int, group_size: int | None, names: list[str]):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    if group_size is None:
        weights = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="channel")
    else:
        weights = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group_size)
    return QuantizationScheme(targets=[f"re:^{re.escape(name)}$" for name in names], weights=weights)


def compressed_tensors_config(modules: dict[str, QuantoLinear]):
    """The compressed-tensors `QuantizationConfig` of a plan: one group per (bits, group size), highest bits first
    (compressed-tensors names them `group_0`, `group_1`, ... when it saves)."""
    from compressed_tensors.quantization import QuantizationConfig

    groups: dict[tuple[int, int | None], list[str]] = {}
    for name, module in modules.items():
        groups.setdefault((module.bits, module.group_size), []).append(name)
    ordered = sorted(groups.items(), key=lambda item: (-item[0][0], item[0][1] or 0))
    schemes = {f"group_{index}": _scheme(bits, size, names) for index, ((bits, size), names) in enumerate(ordered)}
    return QuantizationConfig(config_groups=schemes, format=FORMAT, ignore=["lm_head"], quantization_status="frozen")


# Linear modules that vLLM fuses into one (QKVParallelLinear, MergedColumnParallelLinear): one scheme for all
VLLM_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def vllm_fusion_conflicts(modules: dict[str, nn.Module]) -> list[str]:
    """The modules vLLM fuses but the plan quantizes differently (bits or group size), one line per fused module;
    vLLM would load such a fused module with the scheme of its first part."""
    settings = {name: (module.bits, module.group_size) for name, module in modules.items()}
    conflicts = []
    for name in sorted(settings):
        prefix, _, leaf = name.rpartition(".")
        for fused, parts in VLLM_FUSED.items():
            if leaf != parts[0]:
                continue
            found = {part: settings.get(f"{prefix}.{part}") for part in parts}
            if len(set(found.values())) > 1:
                described = ", ".join(f"{part} {_describe(value)}" for part, value in found.items())
                conflicts.append(f"{prefix}.{fused}: {described}")
    return conflicts


def _describe(settings: tuple[int, int | None] | None) -> str:
    if settings is None:
        return "unquantized"
    bits, group_size = settings
    return f"{bits}-bit/{'channel' if group_size is None else f'g{group_size}'}"


def _check_recovered(dense: nn.Module, modules: dict[str, QuantoLinear]) -> None:
    """Raise unless compressed-tensors' quantization of each dense Linear gives back our codes and weights."""
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    for name, module in modules.items():
        linear = dense.get_submodule(name)
        args = linear.quantization_scheme.weights
        ours = module.dequantized_weight().float()
        theirs = fake_quantize(linear.weight, linear.weight_scale, None, args).float()
        scale = module.weight_scale.float().abs().max().item()
        if not torch.allclose(theirs, ours, rtol=0, atol=1e-3 * scale):
            worst = (theirs - ours).abs().max().item()
            raise RuntimeError(
                f"compressed-tensors re-quantizes {name} differently (max weight difference {worst:.3g}): "
                "unsupported compressed-tensors version; nothing was written."
            )


def export_compressed_tensors(
    model: nn.Module, save_directory: str | Path, companion_files: Sequence[Path] = ()
) -> Path:
    """Write a layer-wise optimum-quanto model as a compressed-tensors `pack-quantized` checkpoint, atomically.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            A layer-wise model quantized with `backend="quanto"` and `sym=True` (or only 8-bit levels); left
            unchanged. Its dequantized copy is built in memory (about the size of the model in its float dtype).
        save_directory (`str` or `os.PathLike`):
            Folder to write (`config.json` with a compressed-tensors `quantization_config`, safetensors weights);
            replaced as a whole, or not at all when anything fails.
        companion_files (`Sequence[Path]`, *optional*):
            Files copied into the folder alongside (e.g. the tokenizer's), unless the save wrote the same name.

    Returns:
        `Path`: the folder written.
    """
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import apply_quantization_config

    modules = _symmetric_modules(model)
    conflicts = vllm_fusion_conflicts(modules)
    if conflicts:
        logger.warning(
            f"vLLM fuses q/k/v and gate/up projections into one module with one scheme, but this plan quantizes "
            f"{len(conflicts)} of them differently (e.g. {conflicts[0]}): transformers and lm-eval load this export, "
            "vLLM cannot. For vLLM, plan with granularity='layer' or 'block'."
        )
    config = compressed_tensors_config(modules)
    dense = dense_copy(model, modules)
    apply_quantization_config(dense, config)
    with torch.no_grad():
        for name, module in modules.items():
            linear = dense.get_submodule(name)
            linear.weight_scale.copy_(module.weight_scale.reshape(linear.weight_scale.shape))
    _check_recovered(dense, modules)
    compressor = ModelCompressor.from_pretrained_model(dense, quantization_format=FORMAT)
    compressor.compress_model(dense)
    with atomic_folder(save_directory, keep_other_files=False) as staging:
        dense.save_pretrained(staging)
        compressor.update_config(staging)
        build_export_card(model, "compressed-tensors", _LOADING).save(staging / CARD_NAME)
        copy_companions(companion_files, staging)
    return Path(save_directory)
