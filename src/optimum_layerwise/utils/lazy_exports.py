"""Public names of a package that live in heavier submodules, imported on first use (stdlib only)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, table: Mapping[str, str], fallback: Callable[[str], Any] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` of `package` for names that live in its submodules.

    Args:
        package (`str`):
            The package's `__name__`.
        table (`Mapping[str, str]`):
            Public name to the submodule (relative to `package`) that defines it; the submodule is imported on the
            first access and the value is then kept in the package's namespace.
        fallback (`Callable[[str], Any]`, *optional*):
            Looks up any other name (e.g. a name that moved elsewhere, see `utils/moved.py`).
    """

    def __getattr__(name: str) -> Any:
        if name not in table:
            if fallback is not None:
                return fallback(name)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{table[name]}", package), name)
        vars(sys.modules[package])[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*vars(sys.modules[package]), *table])

    return __getattr__, __dir__
