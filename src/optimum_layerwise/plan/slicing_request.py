"""The slicing request as a frozen value: how much of the residual stream to slice away and how the layers share it.

[`~optimum_layerwise.LayerwiseSlicingConfig`] (in `hf/`) wraps it for transformers; its arguments document the fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.dataset_record import dataset_fingerprint, recorded_dataset_name
from .importance_methods import check_importance, importance_scores
from .saved_config import SLICING_METHOD
from .slicing_ratios import MAX_LAYER_RATIO


CONSTANT = "constant"


def _is_tensor(value: Any) -> bool:
    """A torch tensor, told without importing torch."""
    return type(value).__module__.startswith("torch") and hasattr(value, "shape")


def check_calibration_settings(request: Any) -> None:
    """Check the calibration settings shared by the layer-wise requests (`dataset`, `num_samples`, `seq_len`,
    `quality_windows`, `seed`); raise a `ValueError` naming the parameter and what is allowed."""
    for name in ("num_samples", "seq_len", "quality_windows"):
        value = getattr(request, name)
        minimum = 0 if name == "quality_windows" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            kind = "non-negative" if minimum == 0 else "positive"
            raise ValueError(f"`{name}` must be a {kind} int, got {value!r}.")
    if isinstance(request.seed, bool) or not isinstance(request.seed, int) or not 0 <= request.seed < 2**63:
        raise ValueError(f"`seed` must be an int in [0, 2**63), got {request.seed!r}.")
    if request.dataset is not None and not (
        isinstance(request.dataset, (str, list, tuple)) or _is_tensor(request.dataset)
    ):
        raise ValueError(
            f"`dataset` must be a list of texts, a list/tensor of token ids or a text file path, got "
            f"{type(request.dataset).__name__}."
        )


@dataclass(frozen=True)
class SlicingRequest:
    """What to slice (see [`~optimum_layerwise.LayerwiseSlicingConfig`] for each field), normalized and checked: an
    invalid request raises a `ValueError` naming the parameter and what is allowed. `tokenizer` is not saved."""

    sparsity: float = 0.25
    importance: str | Sequence[float] = "lim"
    base: float | None = None
    dataset: Any = field(default=None, compare=False)
    tokenizer: Any = field(default=None, compare=False, repr=False)
    num_samples: int = 128
    seq_len: int = 512
    seed: int = 0
    quality_windows: int = 4
    round_to: int = 8
    dataset_sha256: str | None = None

    def __post_init__(self):
        if not isinstance(self.importance, str):
            object.__setattr__(self, "importance", importance_scores(self.importance))
        if self.dataset_sha256 is None:
            object.__setattr__(self, "dataset_sha256", dataset_fingerprint(self.dataset))
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)):
            raise ValueError(f"`sparsity` must be a number in [0, {MAX_LAYER_RATIO}], got {self.sparsity!r}.")
        if not 0 <= self.sparsity <= MAX_LAYER_RATIO:
            raise ValueError(f"`sparsity` must be in [0, {MAX_LAYER_RATIO}], got {self.sparsity}.")
        if self.importance != CONSTANT:
            check_importance(self.importance)
        if self.base is not None and (
            isinstance(self.base, bool)
            or not isinstance(self.base, (int, float))
            or not 0 <= self.base <= self.sparsity
        ):
            raise ValueError(f"`base` must be a number in [0, sparsity={self.sparsity}], got {self.base!r}.")
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise ValueError(f"`round_to` must be a positive int, got {self.round_to!r}.")
        check_calibration_settings(self)

    def slicing_base(self) -> float:
        """The ratio of the most important layer: `base`, else `sparsity / 2`."""
        return self.sparsity / 2 if self.base is None else self.base

    def check_sliceable_request(self) -> None:
        """Raise a `ValueError` if this request cannot slice a model (as opposed to loading a sliced one)."""
        if self.dataset is None:
            raise ValueError(
                "Slicing rotates the residual stream by the principal axes of its hidden states on calibration data: "
                "pass `dataset` (a corpus name such as 'shakespeare', a list of texts with `tokenizer`, token-id "
                "sequences or a text file path)."
            )

    def replace(self, **changes: Any) -> SlicingRequest:
        """A copy with `changes`, normalized and checked again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlicingRequest:
        """The request of a saved slicing config (its `quant_method` and `plan` entries are not part of it)."""
        return cls(**{key: value for key, value in data.items() if key not in ("quant_method", "plan")})

    def to_dict(self) -> dict[str, Any]:
        """The saved form (JSON-safe; the tokenizer and in-memory calibration data left out)."""
        return {
            "quant_method": SLICING_METHOD,
            "sparsity": self.sparsity,
            "importance": self.importance,
            "base": self.base,
            "dataset": recorded_dataset_name(self.dataset),
            "dataset_sha256": self.dataset_sha256,
            "num_samples": self.num_samples,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "quality_windows": self.quality_windows,
            "round_to": self.round_to,
        }
