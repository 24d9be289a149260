"""The slicing plan as a value: the width of every decoder layer's residual stream, and how it was chosen.

A [`SlicingPlan`] is made once per slicing, saved in `config.json` and read back by the loader, which rebuilds the
sliced shapes from it alone. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SlicingPlan:
    """Widths of a sliced model.

    Args:
        hidden_size (`int`):
            Width of the residual stream before slicing.
        widths (`tuple[int, ...]`):
            Channels kept in each decoder layer's input and post-attention stream (the embeddings have `widths[0]`).
        head_width (`int`):
            Channels the last layer hands to the final norm and `lm_head`.
        embeddings_rotated (`bool`, *optional*, defaults to `True`):
            Whether the embeddings and `lm_head` are rotated and sliced too (to `widths[0]` and `head_width`). A
            model that ties them keeps them in the original basis at full width instead (untying them would add a
            whole vocabulary-sized matrix): its first layer reads, and its last layer writes, `hidden_size`
            channels.
        ratios (`tuple[float, ...]`):
            The slicing ratio asked of each layer, before its width was rounded.
        scores (`tuple[float, ...]`, *optional*):
            The importance score of each layer the ratios came from (`None` for constant slicing).
        quality (`dict`, *optional*):
            The held-out check ([`~optimum_layerwise.quality.QualityCheck`] as a dict; "quantized" there means
            sliced).
    """

    hidden_size: int
    widths: tuple[int, ...]
    head_width: int
    ratios: tuple[float, ...]
    scores: tuple[float, ...] | None = None
    quality: dict[str, Any] | None = None
    embeddings_rotated: bool = True

    def __post_init__(self):
        widths = tuple(self.widths)
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        if self.scores is not None:
            object.__setattr__(self, "scores", tuple(float(s) for s in self.scores))
        size = self.hidden_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"`hidden_size` of a slicing plan must be a positive int, got {size!r}.")
        for name, values in (("widths", widths), ("head_width", (self.head_width,))):
            bad = [w for w in values if isinstance(w, bool) or not isinstance(w, int) or not 0 < w <= size]
            if bad or not values:
                raise ValueError(f"`{name}` of a slicing plan must be ints in [1, {size}], got {bad or values}.")
        if len(self.ratios) != len(widths) or (self.scores is not None and len(self.scores) != len(widths)):
            raise ValueError("A slicing plan needs one ratio (and one score, if any) per decoder layer.")
        if not isinstance(self.embeddings_rotated, bool):
            raise ValueError(f"`embeddings_rotated` must be True or False, got {self.embeddings_rotated!r}.")
        if not self.embeddings_rotated and self.head_width != size:
            raise ValueError(f"A plan that keeps the embeddings has head_width = hidden_size ({size}).")

    def input_width(self, index: int) -> int:
        """Channels decoder layer `index` reads (its stream after the attention has `widths[index]`)."""
        return self.hidden_size if index == 0 and not self.embeddings_rotated else self.widths[index]

    def output_width(self, index: int) -> int:
        """Channels decoder layer `index` writes: the next layer's input, or `head_width` for the last layer."""
        return self.input_width(index + 1) if index + 1 < len(self.widths) else self.head_width

    @property
    def sparsity(self) -> float:
        """The mean share of the residual stream removed, over the decoder layers' widths."""
        return 1 - sum(self.widths) / (len(self.widths) * self.hidden_size)

    def replace(self, **changes: Any) -> SlicingPlan:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "widths": list(self.widths),
            "head_width": self.head_width,
            "ratios": list(self.ratios),
            "scores": list(self.scores) if self.scores is not None else None,
            "quality": self.quality,
            "embeddings_rotated": self.embeddings_rotated,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlicingPlan:
        """Read back [`to_dict`]'s output.

        Raises:
            `ValueError`: when a field is missing or has the wrong type.
        """
        try:
            return cls(
                hidden_size=data["hidden_size"],
                widths=tuple(data["widths"]),
                head_width=data["head_width"],
                ratios=tuple(data["ratios"]),
                scores=tuple(data["scores"]) if data.get("scores") is not None else None,
                quality=data.get("quality"),
                embeddings_rotated=data.get("embeddings_rotated", True),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"Not a slicing plan as saved by optimum-layerwise ({error!r}): {dict(data)!r:.120}"
            ) from None
