"""`LayerwiseSlicingConfig`: the transformers config of a layer-wise slicing request and its plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers.utils.quantization_config import QuantizationConfigMixin

from ..plan.saved_config import SLICING_METHOD
from ..plan.slicing_plan import SlicingPlan
from ..plan.slicing_request import CONSTANT as CONSTANT
from ..plan.slicing_request import SlicingRequest
from .request_config import RequestConfigMixin, reject_unknown_arguments, signature_arguments


class LayerwiseSlicingConfig(RequestConfigMixin, QuantizationConfigMixin):
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

    request_type = SlicingRequest

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
        self.set_request(locals())
        self.plan = SlicingPlan.from_dict(plan) if isinstance(plan, Mapping) else plan
        self.post_init()

    def post_init(self):
        r"""Check the plan (the request checked itself); raise a `ValueError` naming what is wrong."""
        if self.plan is not None and not isinstance(self.plan, SlicingPlan):
            raise ValueError(f"`plan` must be a SlicingPlan or its dict, got {type(self.plan).__name__}.")

    def slicing_base(self) -> float:
        """The ratio of the most important layer: `base`, else `sparsity / 2`."""
        return self.request.slicing_base()

    def check_sliceable_request(self) -> None:
        """Raise a `ValueError` if this config cannot slice a model (as opposed to loading a sliced one)."""
        self.request.check_sliceable_request()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the config (the tokenizer and in-memory calibration data are left out)."""
        return {**self.request.to_dict(), "plan": self.plan.to_dict() if self.plan is not None else None}


_ARGUMENTS = signature_arguments(LayerwiseSlicingConfig.__init__)
