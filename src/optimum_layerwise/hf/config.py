"""`LayerwiseQuantizationConfig`: the transformers config of a layer-wise quantization request and its plan."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from transformers.utils import logging
from transformers.utils.quantization_config import QuantizationConfigMixin

from ..plan.quantization_plan import QuantizationPlan
from ..plan.request import QuantizationRequest
from ..plan.saved_config import QUANT_METHOD as QUANT_METHOD
from ..plan.saved_config import layerwise_dict as layerwise_dict
from ..plan.saved_format import upgrade_saved_config
from ..quantize.backends import QuantizationBackend, backend_for
from ..quantize.backends.gptq import gptq_group_size
from .request_config import RequestConfigMixin, reject_unknown_arguments, signature_arguments
from .slicing_config import LayerwiseSlicingConfig


logger = logging.get_logger(__name__)


class LayerwiseQuantizationConfig(RequestConfigMixin, QuantizationConfigMixin):
    """Configuration of variable layer-wise quantization: important decoder layers get more bits.

    Pass it as `quantization_config=` to `AutoModelForCausalLM.from_pretrained` after `import optimum_layerwise`.
    The model is loaded, every decoder layer is scored, bits are allocated to meet the budget and each layer's Linear
    modules are quantized by `backend` at their layer's bit width. The config you pass is not changed: the quantized
    model's `config.quantization_config` is a new one holding the request and its `plan` (a
    [`~optimum_layerwise.plan.QuantizationPlan`]: bits, group size and zero-point mode of every quantized Linear, the
    scores, the budget met and the held-out quality), which `save_pretrained` writes to `config.json`.

    Args:
        bits (`tuple[int, ...]`, *optional*, defaults to `(8, 4)`):
            Precision levels, high to low: two such as `(8, 4)` or `(4, 2)`, three such as `(8, 4, 2)`, or four such as
            `(8, 4, 3, 2)` (GPT-Q). With the sensitivity importance the cheapest bit map within the budget is found
            exactly among all levels.
            `"quanto"` supports 2, 4 and 8 bits; `"gptq"` 2, 3, 4 and 8. The default is the measured best choice
            with round-to-nearest on the offline models (docs/results.md): 2-bit layers at group size 128 collapse
            small models, so `(4, 2)` is for large models or `backend="gptq"`.
        backend (`str`, *optional*, defaults to `"quanto"`):
            Quantizer of each layer: `"quanto"` (optimum-quanto RTN) or `"gptq"`.
        target_bits (`float`, *optional*):
            Average bits over decoder layers, in `[min(bits), max(bits)]`.
        memory_budget (`int` or `str`, *optional*):
            Bytes for the whole model, as an int or a string such as `"6GB"` or `"500MiB"`.
        num_low_bit_layers (`int`, *optional*):
            Number of decoder layers at the lowest level (three levels: also half as many at the highest).
        layer_bits (`dict[int, int]`, *optional*):
            An explicit bit width per decoder layer; skips scoring and allocation. Give at most one of `target_bits`,
            `memory_budget`, `num_low_bit_layers` and `layer_bits`; with none, `target_bits` defaults to the mean of
            the highest and lowest level (half of the layers at the low level for two levels).
        importance (`str`, `list[float]` or `dict[int, float]`, *optional*, defaults to `"sensitivity"`):
            Layer importance: `"lim"`, `"reverse_lim"`, `"zd"`, `"reverse_zd"`, `"random"` (seeded by `seed`),
            `"depth"`, `"sensitivity"`, `"sensitivity_kl"`, or one score per decoder layer (higher = more important)
            as a list or as a mapping `{layer_index: score}` covering every layer. The default, each layer's measured
            quantization cost, was the best or within the random spread of the best ordering on every offline model
            at 8→4 bits (docs/results.md); it needs `dataset`.
        dataset (`list[str]`, `list[list[int]]`, `torch.Tensor` or `str`, *optional*):
            Calibration data for `"lim"`/`"reverse_lim"`: texts (with `tokenizer`), token-id sequences, a corpus name
            (offline: `"shakespeare"`, `"kjv"`, `"wikipedia"`; Hub: `"pg19"`, `"wikitext2"`, `"c4"`) or a text file or
            folder. Only a string is written to `config.json`; of a local file or folder only its name, with the
            sha256 of its content in `dataset_sha256` (never the path).
        tokenizer (*optional*):
            Tokenizer of the model, for text calibration data. Never serialized.
        num_samples (`int`, *optional*):
            Maximum number of calibration windows of `seq_len` tokens. Defaults to 8 for round-to-nearest backends
            (scoring only: on SmolLM2-135M the sensitivity ranking from 2 to 32 windows matches the one from 64 with
            Spearman ≥ 0.997, docs/results.md) and to 128 for `backend="gptq"`, which calibrates every layer on them
            (measured costs use 8 of them, spread evenly).
        seq_len (`int`, *optional*, defaults to 512):
            Maximum tokens per calibration window.
        group_size (`int`, *optional*, defaults to 128):
            Group size of 2/4-bit weights (a multiple of 32, or `None` for per output channel). A layer whose
            input size it does not divide uses the largest smaller multiple of 32 that does, else per channel
            (optimum-quanto's rule). 8-bit weights are per output channel.
        modules_to_not_convert (`list[str]`, *optional*):
            Linear modules inside decoder layers to keep in full precision (full names, suffixes or names such as
            `"gate_proj"`). Embeddings and `lm_head` are never quantized.
        seed (`int`, *optional*, defaults to 0):
            Seed of `importance="random"` and of the calibration subset, in `[0, 2**63)`.
        layer_costs (`dict[int, dict[int, float]]`, *optional*):
            Measured cost of each decoder layer at each level. Pass the `plan.layer_costs` of a model quantized with
            `importance="sensitivity"` (or `"sensitivity_kl"`) to plan the same model for another budget without
            measuring again; bits are then allocated by cost.
        sym (`bool`, *optional*):
            Symmetric int2/int4 grids (no zero-points). Defaults to `True` for GPT-Q and `False` for optimum-quanto,
            whose affine grids are more accurate; `sym=True` makes a quanto checkpoint exportable to compressed-tensors
            without loss (see `optimum_layerwise.export`). Not with `optimizer="hqq"`.
        desc_act (`bool`, *optional*, defaults to `False`):
            GPT-Q only: quantizing columns in order of decreasing activation (act-order).
        optimizer (`str`, *optional*):
            optimum-quanto only: how int2/int4 scales and shifts are chosen, `"max"` (each group's range), `"hqq"`
            (quanto's HQQ optimizer: shifts refined to minimise the rounding error, without data; slower) or
            `"imatrix"` (searched to minimise the rounding error weighted by each input channel's mean squared
            calibration input, llama.cpp's importance matrix; needs `dataset`, and quantizes layer by layer from
            it as GPT-Q does). Defaults to `"imatrix"` when `dataset` is given, else `"max"` ([`default_optimizer`]).
        calibrated_costs (`bool`, *optional*, defaults to `True`):
            Calibrated backends only (GPT-Q, quanto with `optimizer="imatrix"`): measure the sensitivity costs with
            the backend itself, each layer calibrated on its full-precision inputs at every level (one calibration
            per Linear and level), rather than with its data-free round-to-nearest (`False`: faster; it ranks
            layers by how badly they round, not by what calibration leaves of it).
        dataset_sha256 (`str`, *optional*):
            sha256 of a local calibration file or folder, computed when `dataset` is one.
        quality_windows (`int`, *optional*, defaults to 4):
            Windows of `seq_len` held-out calibration tokens (not used to calibrate) on which the model is scored
            before and after quantizing; `0` skips the check. Its result is in `plan.quality` and the model card:
            `{"dataset", "num_windows", "seq_len", "unquantized", "quantized", "ratio", "verdict"}` (perplexities;
            verdict `"good"`, `"degraded"` above a ratio of 1.3, `"collapsed"` above 2).
        unit_costs (`dict[str, dict[int, float]]`, *optional*):
            Measured cost of each block or module (by full name) at each level: the `plan.unit_costs` of a model
            quantized at the same `"block"` or `"module"` granularity, to plan the same model for another budget
            without measuring again.
        granularity (`str`, *optional*, defaults to `"layer"`):
            What one bit width is chosen for: each decoder layer (`"layer"`, the paper), the attention and the MLP
            block of each layer (`"block"`), or each Linear module (`"module"`, as llama.cpp's mixes do). Below a
            layer, bits are allocated by measured cost (`importance="sensitivity"` or `"sensitivity_kl"`, each block
            or module measured alone) within `target_bits` (then the average over quantized weights) or
            `memory_budget`.
        plan ([`~optimum_layerwise.plan.QuantizationPlan`] or `dict`, *optional*):
            Set on the config a quantization returns (and read from `config.json` on loading); not an input.
        verify (`bool`, *optional*, defaults to `False`):
            Loading only, never saved: pass `LayerwiseQuantizationConfig(verify=True)` as `quantization_config=` when
            loading a saved checkpoint to check every tensor and `config.json` against the checkpoint's sha256
            manifest first (reads all weight files once).
        low_memory (`bool`, *optional*):
            Quantizing only, never saved. `True`: quantize layer by layer without the model in memory: every decoder
            layer is read from the checkpoint's files when it is needed (accelerate disk offload) and each quantized
            layer is written to `work_dir` at once, so memory holds about one layer, the embeddings and the
            calibration activations whatever the model's size (see docs/large-models.md). `False`: the whole model in
            memory. `None` (default): `True` when the checkpoint's weights exceed the memory available to this
            process (a cgroup limit included) and no `device_map` was given.
        work_dir (`str` or `os.PathLike`, *optional*):
            Quantizing only, never saved: where low-memory quantization keeps the quantized layers until the model is
            saved (default: a temporary folder, removed with the model). Use a disk with room for the quantized model.
        slicing ([`~optimum_layerwise.LayerwiseSlicingConfig`] or `dict`, *optional*):
            Slice the model first (see [`~optimum_layerwise.LayerwiseSlicingConfig`]), then quantize the sliced model:
            the budget counts the sliced sizes. Its calibration data and tokenizer default to this config's. The
            shortcut matrices slicing adds stay in full precision unless `quantize_shortcuts`. `backend="quanto"`
            only, and in memory (`low_memory` is not `True`). Saved with its plan; the checkpoint reloads sliced and
            quantized.
        quantize_shortcuts (`bool`, *optional*, defaults to `False`):
            With `slicing`: quantize the two shortcut matrices of each decoder layer with the rest of the layer (at
            its bits, counted in its size) instead of keeping them in full precision. At 4 bits they collapse the
            model (docs/results.md): use it with layers at 8 bits.

    With `backend="gptq"` the saved `quantization_config` is a standard GPT-Q one (`quant_method="gptq"`, the top
    level as `bits`, the lower layers in `dynamic`, derived from the plan) with this config under the key
    `"layerwise"`.
    """

    request_type = QuantizationRequest

    def __init__(
        self,
        bits: Sequence[int] = (8, 4),
        backend: str = "quanto",
        target_bits: float | None = None,
        memory_budget: int | str | None = None,
        num_low_bit_layers: int | None = None,
        layer_bits: dict[int, int] | None = None,
        importance: str | Sequence[float] | Mapping[int, float] = "sensitivity",
        dataset: Any = None,
        tokenizer: Any = None,
        num_samples: int | None = None,
        seq_len: int = 512,
        group_size: int | None = 128,
        modules_to_not_convert: list[str] | None = None,
        seed: int = 0,
        layer_costs: dict[int, dict[int, float]] | None = None,
        sym: bool | None = None,
        desc_act: bool = False,
        optimizer: str | None = None,
        calibrated_costs: bool = True,
        dataset_sha256: str | None = None,
        quality_windows: int = 4,
        unit_costs: dict[str, dict[int, float]] | None = None,
        granularity: str = "layer",
        plan: QuantizationPlan | Mapping[str, Any] | None = None,
        verify: bool = False,
        low_memory: bool | None = None,
        work_dir: str | os.PathLike | None = None,
        slicing: Any = None,
        quantize_shortcuts: bool = False,
        **kwargs,
    ):
        reject_unknown_arguments(kwargs, type(self), QUANT_METHOD, _ARGUMENTS)
        self.quant_method = QUANT_METHOD
        self.slicing = _slicing_config(slicing)
        self.set_request({**locals(), "slicing": self.slicing.request if self.slicing is not None else None})
        self.plan = QuantizationPlan.from_dict(plan) if isinstance(plan, Mapping) else plan
        self.verify = verify
        self.post_init()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "slicing" and "request" in self.__dict__:  # the slicing config (with its plan) and its request
            value = _slicing_config(value)
            self.request = self.request.replace(slicing=value.request if value is not None else None)
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def post_init(self):
        r"""Check the plan and the loading options (the request checked itself); raise a `ValueError` naming the
        parameter and what is allowed."""
        self.request.check_plan(self.plan)
        if not isinstance(self.verify, bool):
            raise ValueError(f"`verify` must be True or False, got {self.verify!r}.")

    def check_quantizable(self) -> None:
        """Raise a `ValueError` if this config cannot quantize a model (as opposed to loading a saved one)."""
        self.request.check_quantizable()

    def quantization_backend(self) -> QuantizationBackend:
        """The backend that packs the layers, with this config's options."""
        return backend_for(self.request)

    def budget(self) -> dict[str, Any]:
        """The budget a quantization meets (see [`~optimum_layerwise.plan.request.QuantizationRequest.budget`])."""
        return self.request.budget()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, **kwargs):
        """Build the config from [`to_dict`]'s output, including a saved GPT-Q `quantization_config`."""
        if config_dict.get("quant_method") == "gptq":
            if "layerwise" not in config_dict:
                raise ValueError("This GPT-Q quantization_config was not written by optimum-layerwise.")
            config_dict = config_dict["layerwise"]
        config_dict = upgrade_saved_config(config_dict)
        known = {key: value for key, value in config_dict.items() if key in _ARGUMENTS}
        known.setdefault("optimizer", "max")  # saved without it: made before it existed, by the range (or GPT-Q)
        ignored = sorted(set(config_dict) - set(known))
        if ignored:
            logger.warning(
                f"Ignoring settings of a saved layer-wise config that this version does not know: {ignored}."
            )
        if known.get("quant_method", QUANT_METHOD) != QUANT_METHOD:
            raise ValueError(f"Not a layer-wise config: quant_method={known['quant_method']!r}.")
        return super().from_dict(known, return_unused_kwargs, **kwargs)

    def get_loading_attributes(self) -> dict[str, Any]:
        """Settings of a config passed to `from_pretrained` that apply when loading a saved checkpoint."""
        return {"verify": self.verify}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the config (the tokenizer and in-memory calibration data are left out).

        For `backend="gptq"`, a standard GPT-Q `quantization_config` holding this config under `"layerwise"`.
        """
        layerwise = {
            "quant_method": self.quant_method,
            **self.request.to_dict(),
            "plan": self.plan.to_dict() if self.plan is not None else None,
        }
        if self.slicing is not None:  # with its plan
            layerwise["slicing"] = self.slicing.to_dict()
        if self.backend != "gptq":
            return layerwise
        return {
            "quant_method": "gptq",
            "bits": self.bits[0],
            "group_size": gptq_group_size(self.group_size),
            "sym": self.sym,
            "desc_act": self.desc_act,
            "checkpoint_format": "gptq",
            "pack_dtype": "int32",
            "dynamic": self._gptq_dynamic(),
            "layerwise": layerwise,
        }

    def _gptq_dynamic(self) -> dict[str, dict[str, int]] | None:
        if self.plan is None or not self.plan.layers_path:
            return None
        return self.quantization_backend().dynamic_overrides(self.plan, self.bits[0])


def _slicing_config(slicing: Any) -> LayerwiseSlicingConfig | None:
    """`slicing` as a `LayerwiseSlicingConfig` (also from its saved dict)."""
    if isinstance(slicing, Mapping):
        slicing = LayerwiseSlicingConfig.from_dict(dict(slicing))
    if slicing is not None and not isinstance(slicing, LayerwiseSlicingConfig):
        raise ValueError(f"`slicing` must be a LayerwiseSlicingConfig or its dict, got {type(slicing).__name__}.")
    return slicing


_ARGUMENTS = signature_arguments(LayerwiseQuantizationConfig.__init__)
