"""Stdlib-only helpers every stage uses: atomic writes, checksums, units, system memory, lazy names."""

from __future__ import annotations

from .lazy_exports import lazy_attributes


# public name -> the submodule that defines it, imported on first use
_PUBLIC = {
    "atomic_file": "atomic",
    "atomic_folder": "atomic",
    "atomic_write_text": "atomic",
    "format_bytes": "units",
    "parse_memory": "units",
    "peak_resident_bytes": "system_memory",
    "process_memory_limit": "system_memory",
    "verify_checksums": "checksums",
    "write_checksums": "checksums",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
