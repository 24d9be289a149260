"""Amounts of memory: read from what users type, written the way the package prints them.

Pure functions; no torch, no transformers.
"""

from __future__ import annotations

import math
import re


_MEMORY_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_MEMORY_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_memory(value: int | float | str) -> int:
    """Parse a memory amount into bytes.

    Args:
        value (`int`, `float` or `str`):
            A number of bytes, or a string such as `"6GB"` (10^9 bytes), `"500MiB"` (2^20 bytes) or `"1024"`.

    Returns:
        `int`: the amount in bytes.

    Raises:
        `ValueError`: if the value is below one byte, not finite, 2**63 bytes or more, or the unit is unknown.
    """
    if isinstance(value, bool):
        raise ValueError(f"`memory_budget` must be a number of bytes or a string like '6GB', got {value!r}.")
    if isinstance(value, (int, float)):
        try:
            amount = float(value)
        except OverflowError:
            amount = math.inf
    elif isinstance(value, str):
        match = _MEMORY_PATTERN.match(value)
        unit = match.group(2).upper() if match else None
        if unit not in _MEMORY_UNITS:
            units = ", ".join(u for u in _MEMORY_UNITS if u)
            raise ValueError(
                f"`memory_budget`={value[:40]!r} is not understood; use bytes or a number with one of {units}."
            )
        amount = float(match.group(1)) * _MEMORY_UNITS[unit]
    else:
        raise ValueError(f"`memory_budget` must be an int or a string like '6GB', got {type(value).__name__}.")
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    if not math.isfinite(amount) or amount >= 2**63:
        raise ValueError(f"`memory_budget` must be a finite number of bytes below 2**63, got {shown}.")
    if amount < 1:
        raise ValueError(f"`memory_budget` must be at least 1 byte, got {shown}.")
    return int(amount)


def format_bytes(num_bytes: float) -> str:
    """Bytes in binary units, e.g. `"188.3 MiB"` (1 MiB = 2**20 bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num_bytes) < 1024 or unit == "GiB":
            return f"{int(num_bytes)} B" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def format_bits(bits: int | float) -> str:
    """A bit width as shown in tables: `"4"` for a whole layer at 4 bits, `"4.57"` for the mean bits of a layer whose
    blocks or modules have different widths."""
    return str(bits) if isinstance(bits, int) else f"{bits:.2f}"


def format_count(count: int) -> str:
    """A number of parameters, e.g. `"134.5M"`."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)
