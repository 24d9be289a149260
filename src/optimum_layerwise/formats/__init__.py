"""Files other tools read: model cards, the importance heatmap, checkpoint summaries, exports to dense,
compressed-tensors and GGUF."""

from __future__ import annotations

from ..utils.lazy_exports import lazy_attributes


# public name -> the submodule that defines it, imported on first use
_PUBLIC = {
    "build_model_card": "model_card",
    "export_checkpoint": "export",
    "export_model": "export",
    "plot_importance": "heatmap",
    "read_checkpoint_summary": "checkpoint_summary",
    "set_eval_results": "card_record",
    "write_model_card": "model_card",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
