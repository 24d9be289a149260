"""Stdlib-only helpers every stage uses: atomic writes, checksums, units, system memory, lazy names."""
