"""One-release aliases of modules that moved into the stage packages: importing an old path warns and gives the new
module (the same object, so patching either name patches both). Stdlib only.

The table below is the whole list; [`install_aliases`] is called once by `optimum_layerwise/__init__.py`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any


PACKAGE = "optimum_layerwise"
REMOVED_IN = "0.2"

# old path (relative to the package) -> new path, for every module the flat layout had
MOVED_MODULES: dict[str, str] = {
    "allocation": "plan.allocation",
    "atomic": "utils.atomic",
    "backends": "quantize.backends",
    "backends.base": "quantize.backends.base",
    "backends.gptq": "quantize.backends.gptq",
    "backends.quanto": "quantize.backends.quanto",
    "calibration": "data.calibration",
    "checksums": "utils.checksums",
    "config": "hf.config",
    "corpora": "data.corpora",
    "demo_models": "data.demo_models",
    "export": "formats.export",
    "export.compressed_tensors": "formats.export.compressed_tensors",
    "export.dense": "formats.export.dense",
    "export.gguf": "formats.export.gguf",
    "footprint": "model.footprint",
    "hf_quantizer": "hf.quantizer",
    "hub": "hf.hub",
    "importance.registry": "plan.importance_methods",
    "knapsack": "plan.knapsack",
    "layers": "model.layers",
    "lazy_exports": "utils.lazy_exports",
    "lazy_registration": "hf.lazy_registration",
    "loading": "hf.loading",
    "lora": "quantize.lora",
    "model_card": "formats.model_card",
    "modules": "quantize.modules",
    "offload": "model.offload",
    "planning": "pipelines.planning",
    "plotting": "formats.heatmap",
    "quality": "model.perplexity",
    "registration": "hf.registration",
    "sequential": "quantize.sequential",
    "slicing.card": "formats.slicing_card",
    "slicing.config": "hf.slicing_config",
    "slicing.hf_quantizer": "hf.slicing_quantizer",
    "slicing.plan": "plan.slicing_plan",
    "slicing.ratios": "plan.slicing_ratios",
    "slicing.slice": "hf.compress",
    "streaming": "model.streaming",
    "swapping": "quantize.swapping",
    "system_memory": "utils.system_memory",
    "units": "utils.units",
    "walk": "model.walk",
    "weighted_rounding": "quantize.weighted_rounding",
}

# names that lived in a module whose path is now a package of another job: (old module, name) -> new module
MOVED_NAMES: dict[tuple[str, str], str] = {
    ("quantize", "quantize_model"): "hf.compress",
    ("plan", "resolve_modules"): "quantize.backends.base",
}


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"`{PACKAGE}.{old}` moved to `{PACKAGE}.{new}`; the old path is removed in {REMOVED_IN}.",
        FutureWarning,
        stacklevel=3,
    )


class _AliasLoader(importlib.abc.Loader):
    """Loads an old path as the module of its new path."""

    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        _warn(self.old, self.new)
        return importlib.import_module(f"{PACKAGE}.{self.new}")

    def exec_module(self, module: ModuleType) -> None:
        """The new module has run already."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        old = fullname.removeprefix(f"{PACKAGE}.")
        if old == fullname or old not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(old, MOVED_MODULES[old]))


def moved_name(module: str, name: str) -> Any:
    """The value of `name` imported from `module` (relative to the package) where it used to live, with a warning
    (once: the value is then set on `module`, as `from module import name` looks the name up twice); raises
    `AttributeError` as a module's `__getattr__` must for any other name."""
    new = MOVED_NAMES.get((module, name))
    if new is None:
        raise AttributeError(f"module '{PACKAGE}.{module}' has no attribute '{name}'")
    _warn(f"{module}.{name}", f"{new}.{name}")
    value = getattr(importlib.import_module(f"{PACKAGE}.{new}"), name)
    setattr(sys.modules[f"{PACKAGE}.{module}"], name, value)
    return value


def install_aliases() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
