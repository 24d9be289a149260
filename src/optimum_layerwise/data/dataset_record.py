"""What a config records of its `dataset` argument: a corpus name, or a local file's name and fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .hub_corpora import HUB_CORPORA
from .offline_corpora import ALIASES, OFFLINE_CORPORA


def is_local_dataset(dataset: Any) -> bool:
    """Whether `dataset` names an existing local file or folder rather than a registered corpus."""
    if not isinstance(dataset, str) or not dataset:
        return False
    name = ALIASES.get(dataset, dataset)
    return name not in OFFLINE_CORPORA and name not in HUB_CORPORA and Path(dataset).expanduser().exists()


def recorded_dataset_name(dataset: Any) -> str | None:
    """What a config records of `dataset`: a corpus name as given, a local file or folder by its name only (a path
    can reveal a user's folders), nothing for in-memory data."""
    if not isinstance(dataset, str):
        return None
    return Path(dataset).expanduser().resolve().name if is_local_dataset(dataset) else dataset


def dataset_fingerprint(dataset: Any) -> str | None:
    """sha256 of a local calibration file, or of a folder's `.txt` files (relative paths and contents, sorted);
    `None` for anything else."""
    if not is_local_dataset(dataset):
        return None
    path = Path(dataset).expanduser()
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(path.rglob("*.txt"))
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(2**20), b""):
                digest.update(chunk)
    return digest.hexdigest()
