"""The summary of a saved layer-wise checkpoint (what `optimum-layerwise inspect` prints), read without its weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..data.demo_models import could_be_hub_id
from ..plan.quantization_plan import QuantizationPlan
from ..plan.saved_config import SLICING_METHOD, layerwise_dict
from ..plan.saved_format import upgrade_saved_config
from ..plan.slicing_plan import SlicingPlan


def read_checkpoint_summary(checkpoint: str) -> dict[str, Any]:
    """Plan and sizes of a saved layer-wise checkpoint (local folder or Hub repo), from config.json and the
    safetensors headers only.

    Raises:
        `ValueError`: when the folder or repo is not a readable layer-wise checkpoint, saying why in one line.
    """
    from ..model.footprint import safetensors_tensor_bytes

    folder = Path(checkpoint)
    if folder.is_dir():
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ValueError(f"{checkpoint} has no config.json: not a saved model folder")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from None
        tensor_bytes = safetensors_tensor_bytes(folder)
    elif os.path.exists(checkpoint) or "/" not in checkpoint or not could_be_hub_id(checkpoint):
        raise ValueError(f"{checkpoint}: no such folder (and not a Hub repo id such as 'org/name')")
    else:
        config, tensor_bytes = _hub_checkpoint(checkpoint)
    saved = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(saved, dict):
        kind = "missing" if saved is None else f"a {type(saved).__name__}, not an object"
        raise ValueError(f"{checkpoint} is not a layer-wise checkpoint: its quantization_config is {kind}")
    if saved.get("quant_method") == SLICING_METHOD:
        return _slicing_summary(checkpoint, config, saved, sum(tensor_bytes.values()))
    quantization = layerwise_dict(saved)
    if quantization is None:
        raise ValueError(f"{checkpoint} is not a layer-wise checkpoint (quant_method={saved.get('quant_method')!r})")
    quantization = upgrade_saved_config(quantization)
    if quantization.get("plan") is None:
        raise ValueError(f"{checkpoint} has no layer-wise plan: it was not saved after quantization")
    try:
        plan = QuantizationPlan.from_dict(quantization["plan"])
    except ValueError as error:
        raise ValueError(f"{checkpoint}: {error}") from None
    layer_bits, scores = dict(plan.layer_bits), plan.layer_scores
    if not layer_bits:
        raise ValueError(f"{checkpoint} has no layer-wise bit map (plan.layer_bits is empty)")
    if scores is not None and len(scores) != len(layer_bits):
        raise ValueError(f"{checkpoint}: plan.layer_scores does not give one score per decoder layer")
    return {
        "checkpoint": checkpoint,
        "architecture": (config.get("architectures") or ["?"])[0],
        "backend": quantization.get("backend"),
        "bits": quantization.get("bits"),
        "group_size": quantization.get("group_size"),
        "importance": quantization.get("importance"),
        "layer_bits": layer_bits,
        "layer_scores": list(scores) if scores is not None else None,
        "layer_costs": quantization["plan"].get("layer_costs"),
        "unit_costs": quantization["plan"].get("unit_costs"),
        "granularity": plan.granularity,
        "budget": dict(plan.budget),
        "quality": quantization["plan"].get("quality"),
        "average_bits": plan.average_bits,
        "tensor_bytes": sum(tensor_bytes.values()),
    }


def _slicing_summary(checkpoint: str, config: dict, saved: dict, tensor_bytes: int) -> dict[str, Any]:
    """[`read_checkpoint_summary`] of a sliced checkpoint."""
    try:
        plan = SlicingPlan.from_dict(saved.get("plan") or {})
    except ValueError as error:
        raise ValueError(f"{checkpoint}: {error}") from None
    return {
        "checkpoint": checkpoint,
        "architecture": (config.get("architectures") or ["?"])[0],
        "method": "slicing",
        "importance": saved.get("importance"),
        "requested_sparsity": saved.get("sparsity"),
        "base": saved.get("base"),
        "sparsity": plan.sparsity,
        "hidden_size": plan.hidden_size,
        "widths": list(plan.widths),
        "head_width": plan.head_width,
        "ratios": list(plan.ratios),
        "scores": list(plan.scores) if plan.scores is not None else None,
        "quality": plan.quality,
        "tensor_bytes": tensor_bytes,
    }


def _hub_checkpoint(repo_id: str) -> tuple[dict, dict[str, int]]:
    """The config and the bytes of every tensor of a Hub repo, from its config.json and safetensors headers."""
    from huggingface_hub import get_safetensors_metadata, hf_hub_download

    from ..model.footprint import safetensors_nbytes

    try:
        config = json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text())
        metadata = get_safetensors_metadata(repo_id)
    except Exception as error:  # network, auth and not-found errors all end the command the same way
        raise ValueError(
            f"cannot read {repo_id!r} as a local folder or from the Hub: {type(error).__name__}"
        ) from None
    tensor_bytes = {
        name: safetensors_nbytes(info.shape, info.dtype, f"{file_name}: {name}")
        for file_name, file_metadata in metadata.files_metadata.items()
        for name, info in file_metadata.tensors.items()
    }
    return config, tensor_bytes
