"""Calibration and evaluation data: named corpora, token windows, offline demo models."""

from __future__ import annotations

from ..utils.lazy_exports import lazy_attributes


# public name -> the submodule that defines it, imported on first use
_PUBLIC = {
    "CalibrationBatch": "calibration",
    "DEMO_MODEL": "demo_models",
    "DEMO_MODELS": "demo_models",
    "HUB_CORPORA": "corpora",
    "OFFLINE_CORPORA": "corpora",
    "available_corpora": "corpora",
    "batch_windows": "calibration",
    "calibration_batches": "calibration",
    "load_corpus": "corpora",
    "resolve_model": "demo_models",
    "token_windows": "calibration",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
