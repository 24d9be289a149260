"""Layer-wise checkpoints in the formats stock tools open without `import optimum_layerwise`.

- `"compressed-tensors"`: a folder that stock transformers, lm-eval and vLLM open, with the very weights of the plan
  (quanto checkpoints quantized with `sym=True`; see [`~optimum_layerwise.export.compressed_tensors`]).
- `"gguf"`: a `.gguf` file for llama.cpp and Ollama, the plan's bits as llama.cpp types, quantized by llama.cpp's
  own tools (see [`~optimum_layerwise.export.gguf`]).

```python
from optimum_layerwise.export import export_checkpoint

export_checkpoint("my-model-sym", "my-model-ct", format="compressed-tensors")
export_checkpoint("my-model-sym", "my-model.gguf", format="gguf", llama_cpp="path/to/llama.cpp")
```
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from torch import nn


EXPORT_OPTIONS: dict[str, tuple[str, ...]] = {
    "compressed-tensors": (),
    "gguf": ("base_model", "llama_cpp", "llama_quantize", "imatrix"),
}
"""The options each export format takes (see [`export_model`])."""
EXPORT_FORMATS = tuple(EXPORT_OPTIONS)
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


def _check_format(format: str) -> None:
    if format not in EXPORT_FORMATS:
        raise ValueError(f"`format` must be one of {EXPORT_FORMATS}, got {format!r:.40}.")


def export_model(
    model: nn.Module,
    destination: str | os.PathLike,
    format: str,
    companion_files: Sequence[Path] = (),
    **options: Any,
) -> Path:
    """Write the layer-wise `model` (in memory, left unchanged) to `destination` in `format`, atomically.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            A layer-wise quantized model.
        destination (`str` or `os.PathLike`):
            The folder (compressed-tensors) or `.gguf` file (gguf) to write; replaced as a whole, or not at all.
        format (`str`):
            One of [`EXPORT_FORMATS`].
        companion_files (`Sequence[Path]`, *optional*):
            Files written alongside (the tokenizer's).
        options:
            gguf only: `base_model`, `llama_cpp`, `llama_quantize`, `imatrix` (see
            [`~optimum_layerwise.export.gguf.export_gguf`]).
    """
    _check_format(format)
    unknown = sorted(set(options) - set(EXPORT_OPTIONS[format]))
    if unknown:
        raise ValueError(f"format={format!r} takes the options {list(EXPORT_OPTIONS[format])}, got {unknown}.")
    if format == "gguf":
        from .gguf import export_gguf

        if Path(destination).suffix != ".gguf":
            raise ValueError(f"A GGUF export is one file: its name must end in .gguf, got {os.fspath(destination)!r}.")
        return export_gguf(model, destination, companion_files=companion_files, **options)
    if importlib.util.find_spec("compressed_tensors") is None:
        raise ImportError("format='compressed-tensors' needs it: pip install 'compressed-tensors>=0.20'")
    from .compressed_tensors import export_compressed_tensors

    return export_compressed_tensors(model, destination, companion_files)


def export_checkpoint(source: str | os.PathLike, destination: str | os.PathLike, format: str, **options: Any) -> Path:
    """Load the layer-wise checkpoint `source` (a folder or Hub id) and write it to `destination` in `format`, with its
    tokenizer and generation files; see [`export_model`]."""
    from transformers import AutoModelForCausalLM

    _check_format(format)
    model = AutoModelForCausalLM.from_pretrained(source)
    if getattr(getattr(model.config, "quantization_config", None), "plan", None) is None:
        raise ValueError(f"{os.fspath(source)!r} is not a layer-wise quantized checkpoint.")
    companions = [Path(source) / name for name in _COMPANION_FILES if (Path(source) / name).is_file()]
    return export_model(model, destination, format, companions, **options)
