"""`LayerwiseSlicingConfig`: how much of the residual stream to slice away, and how the layers share it."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from transformers.utils.quantization_config import QuantizationConfigMixin

from ..data.corpora import dataset_fingerprint, recorded_dataset_name
from ..plan.importance_methods import check_importance, importance_scores
from ..plan.slicing_plan import SlicingPlan
from ..plan.slicing_ratios import MAX_LAYER_RATIO
from .config import check_calibration_settings, reject_unknown_arguments, signature_arguments


SLICING_METHOD = "layerwise_slicing"
CONSTANT = "constant"


class LayerwiseSlicingConfig(QuantizationConfigMixin):
    """Configuration of dynamic layer-wise slicing: SliceGPT's rotation, with each decoder layer sliced by its own
    ratio, more redundant layers more (DynamicSlicing), so that the mean ratio is `sparsity`.

    Pass it as `quantization_config=` to `AutoModelForCausalLM.from_pretrained` after `import optimum_layerwise`. The
    model is loaded, the RMSNorm scales are fused into the Linears that read them, every decoder layer is scored,
    and the residual stream is rotated by the principal axes of its calibration hidden states and sliced, one layer
    at a time. The sliced model's `config.quantization_config` is a new config holding the request and its `plan`
    (a [`~optimum_layerwise.slicing.plan.SlicingPlan`]: the width of every layer and the held-out quality), which
    `save_pretrained` writes to `config.json`; `from_pretrained` on the saved folder rebuilds the sliced shapes.

    Args:
        sparsity (`float`, *optional*, defaults to `0.25`):
            Mean share of the residual stream removed over the decoder layers, in `[0, 0.9]`. Widths are rounded to
            a multiple of `round_to`, so the achieved mean (`plan.sparsity`) can differ slightly.
        importance (`str`, `list[float]` or `dict[int, float]`, *optional*, defaults to `"lim"`):
            How the ratio is shared: `"constant"` (every layer by `sparsity`, SliceGPT), a layer importance method
            (`"lim"`: the paper's Layer Redundancy; `"sensitivity"`, `"zd"`, `"random"`, ... as for quantization), or
            one score per decoder layer (higher = more important = sliced less).
        base (`float`, *optional*):
            The ratio of the most important layer, in `[0, sparsity]` (the paper's slicing base); the others are
            sliced more in proportion to their redundancy. Defaults to `sparsity / 2`. `base=sparsity` is constant
            slicing.
        dataset (`list[str]`, `list[list[int]]`, `torch.Tensor` or `str`):
            Calibration data (required: the rotation is computed from it), as for
            [`~optimum_layerwise.LayerwiseQuantizationConfig`].
        tokenizer (*optional*):
            Tokenizer of the model, for text calibration data. Never serialized.
        num_samples (`int`, *optional*, defaults to 128):
            Maximum number of calibration windows of `seq_len` tokens.
        seq_len (`int`, *optional*, defaults to 512):
            Maximum tokens per calibration window.
        seed (`int`, *optional*, defaults to 0):
            Seed of the calibration subset and of `importance="random"`.
        quality_windows (`int`, *optional*, defaults to 4):
            Held-out windows scored before and after slicing (`plan.quality`); `0` skips the check.
        round_to (`int`, *optional*, defaults to 8):
            Every width is a multiple of it.
        dataset_sha256 (`str`, *optional*):
            sha256 of a local calibration file or folder, computed when `dataset` is one.
        plan ([`~optimum_layerwise.slicing.plan.SlicingPlan`] or `dict`, *optional*):
            Set on the config a slicing returns (and read from `config.json` on loading); not an input.
    """

    def __init__(
        self,
        sparsity: float = 0.25,
        importance: str | Sequence[float] | Mapping[int, float] = "lim",
        base: float | None = None,
        dataset: Any = None,
        tokenizer: Any = None,
        num_samples: int = 128,
        seq_len: int = 512,
        seed: int = 0,
        quality_windows: int = 4,
        round_to: int = 8,
        dataset_sha256: str | None = None,
        plan: SlicingPlan | Mapping[str, Any] | None = None,
        **kwargs,
    ):
        reject_unknown_arguments(kwargs, type(self), SLICING_METHOD, _ARGUMENTS)
        self.quant_method = SLICING_METHOD
        self.sparsity = sparsity
        self.importance = importance if isinstance(importance, str) else importance_scores(importance)
        self.base = base
        self.dataset = dataset
        self.dataset_sha256 = dataset_sha256 if dataset_sha256 is not None else dataset_fingerprint(dataset)
        self.tokenizer = tokenizer
        self.num_samples = num_samples
        self.seq_len = seq_len
        self.seed = seed
        self.quality_windows = quality_windows
        self.round_to = round_to
        self.plan = SlicingPlan.from_dict(plan) if isinstance(plan, Mapping) else plan
        self.post_init()

    def post_init(self):
        r"""Check every argument; raise a `ValueError` naming the parameter and what is allowed."""
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
        if self.plan is not None and not isinstance(self.plan, SlicingPlan):
            raise ValueError(f"`plan` must be a SlicingPlan or its dict, got {type(self.plan).__name__}.")

    def slicing_base(self) -> float:
        """The ratio of the most important layer: `base`, else `sparsity / 2`."""
        return self.sparsity / 2 if self.base is None else self.base

    def check_sliceable_request(self) -> None:
        """Raise a `ValueError` if this config cannot slice a model (as opposed to loading a sliced one)."""
        if self.dataset is None:
            raise ValueError(
                "Slicing rotates the residual stream by the principal axes of its hidden states on calibration data: "
                "pass `dataset` (a corpus name such as 'shakespeare', a list of texts with `tokenizer`, token-id "
                "sequences or a text file path)."
            )

    def with_plan(self, plan: SlicingPlan) -> LayerwiseSlicingConfig:
        """A copy of this config (same request, same tokenizer and calibration data) holding `plan`."""
        result = copy.copy(self)
        result.plan = plan
        result.post_init()
        return result

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the config (the tokenizer and in-memory calibration data are left out)."""
        return {
            "quant_method": self.quant_method,
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
            "plan": self.plan.to_dict() if self.plan is not None else None,
        }


_ARGUMENTS = signature_arguments(LayerwiseSlicingConfig.__init__)
