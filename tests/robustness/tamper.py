"""Shared tools of the robustness tests: quantize a tiny model, and tamper with a saved checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from optimum_layerwise import LayerwiseQuantizationConfig


BITS_A = {0: 4, 1: 4, 2: 2, 3: 2}
BITS_B = {0: 2, 1: 2, 2: 4, 3: 4}


def quantize(folder: str, **kwargs):
    """The tiny model of `folder` quantized with quanto (group size 32), by default with the bit map `BITS_A`."""
    settings = {"bits": (4, 2), "importance": "zd", "layer_bits": BITS_A, "group_size": 32}
    config = LayerwiseQuantizationConfig(**{**settings, **kwargs})
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)


def saved_layer_bits(folder: Path) -> dict[int, int]:
    saved = json.loads((folder / "config.json").read_text())["quantization_config"]["layer_bits"]
    return {int(index): bits for index, bits in saved.items()}


def edit_tensors(folder: Path, edit) -> None:
    """Rewrite `model.safetensors` after `edit(tensors)` changed the dict of tensors in place."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def edit_header(folder: Path, edit) -> None:
    """Rewrite the JSON header of `model.safetensors` after `edit(header)` (the tensor bytes are left as they are)."""
    path = folder / "model.safetensors"
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    edit(header)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + length :])


def edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config["quantization_config"])
    path.write_text(json.dumps(config))


def card_layer_bits(folder: Path) -> dict[int, int]:
    """The bit map shown in the model card's "Bits per layer" table."""
    section = (folder / "README.md").read_text().split("## Bits per layer", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = int(cells[1])
    return rows
