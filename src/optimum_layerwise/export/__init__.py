"""Layer-wise checkpoints in the formats stock tools open without `import optimum_layerwise`.

```python
from optimum_layerwise.export import export_checkpoint

export_checkpoint("my-model-6bit", "my-model-6bit-ct", format="compressed-tensors")
```
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from torch import nn


EXPORT_FORMATS = ("compressed-tensors",)
# files of a checkpoint folder that describe the tokenizer and generation, copied next to the exported weights
_COMPANION_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)


def export_model(
    model: nn.Module, save_directory: str | os.PathLike, format: str, companion_files: Sequence[Path] = ()
) -> Path:
    """Write the layer-wise `model` (in memory, left unchanged) to `save_directory` in `format`, atomically.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            A layer-wise quantized model.
        save_directory (`str` or `os.PathLike`):
            Folder to write; replaced as a whole, or not at all when anything fails.
        format (`str`):
            One of [`EXPORT_FORMATS`]: `"compressed-tensors"` (see
            [`~optimum_layerwise.export.compressed_tensors.export_compressed_tensors`]).
        companion_files (`Sequence[Path]`, *optional*):
            Files written alongside (e.g. the tokenizer's).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"`format` must be one of {EXPORT_FORMATS}, got {format!r:.40}.")
    if importlib.util.find_spec("compressed_tensors") is None:
        raise ImportError(
            "format='compressed-tensors' needs compressed-tensors: pip install 'compressed-tensors>=0.20'"
        )
    from .compressed_tensors import export_compressed_tensors

    return export_compressed_tensors(model, save_directory, companion_files)


def export_checkpoint(source: str | os.PathLike, save_directory: str | os.PathLike, format: str) -> Path:
    """Load the layer-wise checkpoint `source` (a folder or Hub id) and write it to `save_directory` in `format`, with
    its tokenizer and generation files; see [`export_model`]."""
    from transformers import AutoModelForCausalLM

    if format not in EXPORT_FORMATS:
        raise ValueError(f"`format` must be one of {EXPORT_FORMATS}, got {format!r:.40}.")
    model = AutoModelForCausalLM.from_pretrained(source)
    if getattr(getattr(model.config, "quantization_config", None), "plan", None) is None:
        raise ValueError(f"{os.fspath(source)!r} is not a layer-wise quantized checkpoint.")
    companions = [Path(source) / name for name in _COMPANION_FILES if (Path(source) / name).is_file()]
    return export_model(model, save_directory, format, companions)
