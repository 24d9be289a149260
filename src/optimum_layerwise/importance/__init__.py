"""Layer importance: one score per decoder layer, higher = more important.

| method          | needs data | what it is                                                                 |
|-----------------|------------|----------------------------------------------------------------------------|
| `"lim"`         | yes        | minus the input/output cosine similarity of each layer (paper Eq. 1)        |
| `"reverse_lim"` | yes        | the LIM order reversed (paper baseline)                                    |
| `"zd"`          | no         | share of weights with z-score > 1 (paper §3.1, method-section direction)    |
| `"reverse_zd"`  | no         | the ZD order reversed (the abstract's "smaller is better")                 |
| `"random"`      | no         | a random order from `seed` (paper baseline)                                |
| `"depth"`       | no         | last layer kept, then from the bottom up: drop-from-the-top (Gromov et al.) |
| `"sensitivity"` | yes        | measured relative output error of each layer quantized alone (≈ 2 forwards)  |
| `"sensitivity_kl"` | yes     | measured next-token KL with each layer quantized alone (1 forward per layer) |

The two sensitivity methods score a layer by its cost at the lowest level; quantization with them allocates bits by
the full measured costs (see [`~optimum_layerwise.allocation.allocate_bits_by_cost`]).
"""

from __future__ import annotations

from ..plan.importance_methods import (
    IMPORTANCE_METHODS,
    ImportanceMethod,
    check_importance,
    importance_scores,
    missing_data_message,
    needs_calibration_data,
)
from ..utils.lazy_exports import lazy_attributes


# the scorers import torch: loaded on first use, so that the names above can be checked without it
__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "compute_importance": "scoring",
        "score_layers": "scoring",
        "measure_layer_costs": "sensitivity",
        "measure_unit_costs": "sensitivity",
        "costs_to_scores": "sensitivity",
    },
)


__all__ = [
    "IMPORTANCE_METHODS",
    "ImportanceMethod",
    "check_importance",
    "compute_importance",
    "costs_to_scores",
    "importance_scores",
    "measure_layer_costs",
    "measure_unit_costs",
    "missing_data_message",
    "needs_calibration_data",
    "score_layers",
]
