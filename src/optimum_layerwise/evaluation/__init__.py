"""Evaluation of compressed models: held-out perplexity, lm-eval tasks, ordering sweeps, reports and plots."""

from __future__ import annotations

from ..utils.lazy_exports import lazy_attributes


# public name -> the submodule that defines it, imported on first use
_PUBLIC = {
    "SweepSettings": "sweep",
    "evaluate_tasks": "tasks",
    "perplexity": "perplexity",
    "plot_sweep": "plots",
    "run_sweep": "sweep",
    "save_sweep": "sweep",
    "write_task_configs": "task_configs",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
