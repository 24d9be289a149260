"""The `quant_method` names of saved layer-wise configs, and the layer-wise settings read from a saved config."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


QUANT_METHOD = "layerwise"
SLICING_METHOD = "layerwise_slicing"


def layerwise_dict(quantization_config: Mapping[str, Any] | Any | None) -> dict[str, Any] | None:
    """The layer-wise settings and plan inside a model's `quantization_config` (an object with `to_dict()`, such as a
    `QuantizationConfigMixin`, or its saved dict, also the standard GPT-Q form with its `"layerwise"` entry), or `None`
    when it is not a layer-wise config."""
    if quantization_config is None:
        return None
    data = dict(quantization_config) if isinstance(quantization_config, Mapping) else quantization_config.to_dict()
    if data.get("quant_method") == "gptq":
        data = dict(data.get("layerwise") or {})
    return data if data.get("quant_method") == QUANT_METHOD else None


def planned_config(model: Any, method: str) -> Any:
    """`model.config.quantization_config` when it is a layer-wise config of `method` ([`QUANT_METHOD`] or
    [`SLICING_METHOD`]) holding a plan (the model was compressed, or loaded compressed, by this package), else
    `None`."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if getattr(config, "quant_method", None) != method or getattr(config, "plan", None) is None:
        return None
    return config


def holds_layerwise_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder`'s `config.json` is the config of a layer-wise quantized or sliced checkpoint."""
    try:
        saved = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(saved, dict) and (
        layerwise_dict(saved) is not None or saved.get("quant_method") == SLICING_METHOD
    )
