"""Per-tensor sha256 manifest of a checkpoint folder, written at save and checked on demand.

`layerwise_checksums.json` holds the sha256 of `config.json` and, for every tensor in every `*.safetensors` file, the
sha256 of its bytes with its dtype and shape (the same bytes read as another dtype or shape are another model), and
the sha256 of each file's header metadata; all read straight from the files, so the manifest describes what is on
disk. Verifying re-reads the files: about as fast as the disk and sha256 allow (see docs/faq.md). Manifests written
before dtypes and shapes were recorded (version 1) are checked on the bytes. This module imports neither torch nor
transformers.

```python
from optimum_layerwise.utils.checksums import verify_checksums

problems = verify_checksums("my-model-3bit")  # [] when every tensor and config.json are as saved
```
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


CHECKSUMS_NAME = "layerwise_checksums.json"
MANIFEST_VERSION = 2
METADATA_KEY = "__metadata__"
HASHED_FILES = ("config.json",)
_CHUNK = 16 * 2**20
_MAX_HEADER = 100 * 2**20


def _sha256_of_range(handle, start: int, length: int) -> str:
    digest = hashlib.sha256()
    handle.seek(start)
    remaining = length
    while remaining:
        chunk = handle.read(min(_CHUNK, remaining))
        if not chunk:
            raise ValueError(f"{handle.name} ends before the tensor data its header announces.")
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def safetensors_header(path: str | os.PathLike) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the offset where its tensor data starts.

    Raises:
        `ValueError`: if the file is not a well-formed safetensors file.
    """
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path} is not a safetensors file: it is shorter than its header length.")
        length = int.from_bytes(prefix, "little")
        if length > _MAX_HEADER:
            raise ValueError(f"{path} is not a safetensors file: header of {length} bytes announced.")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path} is not a safetensors file: its header is not JSON.") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file: its header is not a JSON object.")
    announced = 0
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) and name != METADATA_KEY else None
        if isinstance(offsets, list) and len(offsets) == 2 and isinstance(offsets[1], int):
            announced = max(announced, offsets[1])
    held = os.path.getsize(path) - 8 - length
    if held < announced:
        raise ValueError(
            f"{path} is truncated: its header announces {announced} bytes of tensor data, the file holds {held}."
        )
    return header, 8 + length


def tensor_checksums(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """What the manifest records of one safetensors file: for every tensor, by name, the sha256 of its bytes, its
    dtype and its shape; under `"__metadata__"`, the sha256 of the header's metadata."""
    header, data_start = safetensors_header(path)
    checksums: dict[str, dict[str, Any]] = {}
    with open(path, "rb") as handle:
        for name, info in sorted(header.items()):
            if name == METADATA_KEY:
                checksums[name] = {"sha256": hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()}
                continue
            try:
                begin, end = (int(offset) for offset in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}: tensor {name!r} has no valid data_offsets in its header.") from None
            checksum = _sha256_of_range(handle, data_start + begin, end - begin)
            checksums[name] = {"sha256": checksum, "dtype": info.get("dtype"), "shape": info.get("shape")}
    return checksums


def _tensor_difference(
    file_name: str, tensor: str, expected: str | dict[str, Any], found: dict[str, Any]
) -> str | None:
    """How a tensor on disk differs from its manifest entry (`None` when it does not); a version-1 entry is the sha256
    of the bytes alone."""
    where = f"{file_name}: tensor {tensor}"
    if isinstance(expected, str):
        expected = {"sha256": expected}
    for key in ("dtype", "shape"):
        if key in expected and expected[key] != found[key]:
            return f"{where} has {key} {found[key]}, saved as {expected[key]}"
    if expected.get("sha256") == found["sha256"]:
        return None
    if tensor == METADATA_KEY:
        return f"{file_name}: the header metadata differs from the saved one"
    return f"{where} differs from the saved one"


def _file_checksum(path: Path) -> str:
    with open(path, "rb") as handle:
        return _sha256_of_range(handle, 0, path.stat().st_size)


def compute_checksums(folder: str | os.PathLike) -> dict:
    """The manifest of `folder`: `{"algorithm": "sha256", "version": 2, "files": {name: sha256}, "tensors": {file:
    {tensor: {"sha256", "dtype", "shape"}}}}`."""
    folder = Path(folder)
    return {
        "algorithm": "sha256",
        "version": MANIFEST_VERSION,
        "files": {name: _file_checksum(folder / name) for name in HASHED_FILES if (folder / name).is_file()},
        "tensors": {path.name: tensor_checksums(path) for path in sorted(folder.glob("*.safetensors"))},
    }


def write_checksums(folder: str | os.PathLike) -> Path:
    """Write `layerwise_checksums.json` into `folder` (after its weights and config.json are written)."""
    path = Path(folder) / CHECKSUMS_NAME
    path.write_text(json.dumps(compute_checksums(folder), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def verify_checksums(folder: str | os.PathLike) -> list[str]:
    """Compare `folder` with its `layerwise_checksums.json`.

    Returns:
        `list[str]`: one line per difference (a changed, missing or unexpected tensor or file); empty when the
        folder is exactly as saved.

    Raises:
        `ValueError`: if the folder has no manifest, or the manifest is not one written by [`write_checksums`].
    """
    folder = Path(folder)
    manifest_path = folder / CHECKSUMS_NAME
    if not manifest_path.is_file():
        raise ValueError(f"{folder} has no {CHECKSUMS_NAME}: it was saved without checksums and cannot be verified.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected_files, expected_tensors = dict(manifest["files"]), dict(manifest["tensors"])
        if manifest.get("algorithm") != "sha256":
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{manifest_path} is not a checksum manifest written by optimum-layerwise.") from None
    actual = compute_checksums(folder)
    problems = []
    for name, checksum in expected_files.items():
        found = actual["files"].get(name)
        if found != checksum:
            problems.append(f"{name} is missing" if found is None else f"{name} was modified")
    for file_name in sorted(set(expected_tensors) | set(actual["tensors"])):
        if file_name not in actual["tensors"]:
            problems.append(f"{file_name} is missing")
            continue
        if file_name not in expected_tensors:
            problems.append(f"{file_name} is not in the manifest")
            continue
        expected, found = expected_tensors[file_name], actual["tensors"][file_name]
        if not isinstance(next(iter(expected.values()), {}), dict):  # version 1: tensors only, bytes only
            found = {name: entry for name, entry in found.items() if name != METADATA_KEY}
        for tensor in sorted(set(expected) | set(found)):
            if tensor not in found:
                problems.append(f"{file_name}: tensor {tensor} is missing")
            elif tensor not in expected:
                problems.append(f"{file_name}: tensor {tensor} is not in the manifest")
            elif difference := _tensor_difference(file_name, tensor, expected[tensor], found[tensor]):
                problems.append(difference)
    return problems
