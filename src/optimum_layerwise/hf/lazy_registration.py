"""Register the `"layerwise"` method with transformers when transformers' quantizer registry loads, so that
`import optimum_layerwise` stays light (no torch, no transformers: the CLI's `--help` and the pure modules need
neither).

When `transformers.quantizers.auto` is already imported, registration happens at once; otherwise a one-shot import
hook registers right after that module runs, before any model can be loaded. When that module first loads from inside
one of the modules registration needs (`import optimum_layerwise.hf_quantizer` as a program's first import of the
package), registration waits until that module has run: it calls [`register_deferred`] at its end. Standard library
only.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any


REGISTRY_MODULE = "transformers.quantizers.auto"
# the modules registration imports that import transformers' quantizers themselves
NEEDED_MODULES = (
    "optimum_layerwise.hf.registration",
    "optimum_layerwise.hf.quantizer",
    "optimum_layerwise.hf.slicing_quantizer",
)
_deferred = False


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False)


def _register(finished: str | None = None) -> None:
    """Register, unless one of [`NEEDED_MODULES`] other than `finished` is still running (registration would import
    it half-run): then wait for [`register_deferred`]."""
    global _deferred
    _deferred = any(_initializing(name) for name in NEEDED_MODULES if name != finished)
    if not _deferred:
        from .registration import register

        register()


def register_deferred(finished: str) -> None:
    """Register now if registration waited for one of [`NEEDED_MODULES`]; each calls this at its end with its
    `__name__` as `finished`."""
    if _deferred:
        _register(finished)


class _RegisterAfterLoading(importlib.abc.Loader):
    """Runs the real loader of the registry module, then registers (every other attribute is the real loader's)."""

    def __init__(self, loader: Any):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        _register()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class _RegistryFinder(importlib.abc.MetaPathFinder):
    """Finds the registry module with the other finders and wraps its loader; removes itself after one use."""

    def find_spec(self, fullname, path, target=None):
        if fullname != REGISTRY_MODULE:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisterAfterLoading(spec.loader)
                return spec
        return None


def register_with_transformers() -> None:
    """Register now if transformers' quantizer registry is loaded, else as soon as it loads."""
    if REGISTRY_MODULE in sys.modules:
        _register()
    elif not any(isinstance(finder, _RegistryFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegistryFinder())
