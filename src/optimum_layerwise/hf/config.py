"""`LayerwiseQuantizationConfig`: what to quantize, how, and to which budget."""

from __future__ import annotations

import copy
import difflib
import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers.utils import logging
from transformers.utils.quantization_config import QuantizationConfigMixin

from ..data.corpora import dataset_fingerprint, recorded_dataset_name
from ..model.perplexity import QualityCheck
from ..plan.allocation import check_budget, check_levels
from ..plan.importance_methods import (
    IMPORTANCE_METHODS,
    check_importance,
    importance_scores,
    missing_data_message,
    needs_calibration_data,
)
from ..plan.quantization_plan import (
    BUDGET_NAMES,
    QuantizationPlan,
    check_granularity,
    check_layer_bits,
    check_layer_costs,
    normalize_layer_bits,
    normalize_layer_costs,
    normalize_unit_costs,
    upgrade_saved_config,
)
from ..quantize.backends import BACKEND_BITS, QuantizationBackend, get_backend
from ..quantize.backends.gptq import gptq_group_size
from ..quantize.modules import QUANTO_OPTIMIZERS


logger = logging.get_logger(__name__)

QUANT_METHOD = "layerwise"


def default_num_samples(backend: str) -> int:
    """Calibration windows used when `num_samples` is not given: few for scoring, many for GPT-Q's calibration."""
    return 128 if backend == "gptq" else 8


def default_optimizer(backend: str, dataset: Any) -> str:
    """The quanto optimizer used when `optimizer` is not given: `"imatrix"` when there is calibration data (it gave
    the lowest held-out perplexity at every budget measured in docs/frontier.md), else `"max"`; `"max"` (no option)
    for other backends."""
    return "imatrix" if backend == "quanto" and dataset is not None else "max"


def check_calibration_settings(config: Any) -> None:
    """Check the calibration settings shared by the layer-wise configs (`dataset`, `num_samples`, `seq_len`,
    `quality_windows`, `seed`); raise a `ValueError` naming the parameter and what is allowed."""
    for name in ("num_samples", "seq_len", "quality_windows"):
        value = getattr(config, name)
        minimum = 0 if name == "quality_windows" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            kind = "non-negative" if minimum == 0 else "positive"
            raise ValueError(f"`{name}` must be a {kind} int, got {value!r}.")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed < 2**63:
        raise ValueError(f"`seed` must be an int in [0, 2**63), got {config.seed!r}.")
    if config.dataset is not None and not isinstance(config.dataset, (str, list, tuple, torch.Tensor)):
        raise ValueError(
            f"`dataset` must be a list of texts, a list/tensor of token ids or a text file path, got "
            f"{type(config.dataset).__name__}."
        )


def reject_unknown_arguments(kwargs: dict[str, Any], config_class: type, method: str, known: Sequence[str]) -> None:
    """Refuse misspelled arguments of a config (`target_bit=2.0` would otherwise leave the default budget in place)
    and a `quant_method` other than `method`."""
    if kwargs.get("quant_method", method) != method:
        raise ValueError(f"`quant_method` of a {config_class.__name__} is {method!r}, got {kwargs['quant_method']!r}.")
    unknown = sorted(set(kwargs) - {"quant_method"})
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else f" Known arguments: {', '.join(sorted(known))}."
        raise ValueError(
            f"{config_class.__name__} got unknown argument{'s' if len(unknown) > 1 else ''} {unknown}.{hint}"
        )


def signature_arguments(function: Any) -> tuple[str, ...]:
    """The keyword arguments of a config's `__init__`, and `quant_method`."""
    names = inspect.signature(function).parameters
    return (*(name for name in names if name not in ("self", "kwargs")), "quant_method")


def layerwise_dict(quantization_config: Mapping[str, Any] | QuantizationConfigMixin | None) -> dict[str, Any] | None:
    """The layer-wise settings and plan inside a model's `quantization_config` (an object or its saved dict, also the
    standard GPT-Q form with its `"layerwise"` entry), or `None` when it is not a layer-wise config."""
    if quantization_config is None:
        return None
    data = dict(quantization_config) if isinstance(quantization_config, Mapping) else quantization_config.to_dict()
    if data.get("quant_method") == "gptq":
        data = dict(data.get("layerwise") or {})
    return data if data.get("quant_method") == QUANT_METHOD else None


class LayerwiseQuantizationConfig(QuantizationConfigMixin):
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
        self.backend = backend
        self.bits = tuple(bits) if isinstance(bits, (list, tuple)) else bits
        self.target_bits = target_bits
        self.memory_budget = memory_budget
        self.num_low_bit_layers = num_low_bit_layers
        self.layer_bits = normalize_layer_bits(layer_bits) if layer_bits is not None else None
        self.importance = importance if isinstance(importance, str) else importance_scores(importance)
        self.dataset = dataset
        self.dataset_sha256 = dataset_sha256 if dataset_sha256 is not None else dataset_fingerprint(dataset)
        self.tokenizer = tokenizer
        self.num_samples = num_samples if num_samples is not None else default_num_samples(backend)
        self.seq_len = seq_len
        self.group_size = group_size
        self.modules_to_not_convert = modules_to_not_convert
        self.seed = seed
        self.layer_costs = normalize_layer_costs(layer_costs) if layer_costs is not None else None
        self.sym = sym if sym is not None else backend == "gptq"
        self.desc_act = desc_act
        self.optimizer = optimizer if optimizer is not None else default_optimizer(backend, dataset)
        self.calibrated_costs = calibrated_costs
        self.quality_windows = quality_windows
        self.unit_costs = normalize_unit_costs(unit_costs) if unit_costs is not None else None
        self.granularity = granularity
        self.plan = QuantizationPlan.from_dict(plan) if isinstance(plan, Mapping) else plan
        self.verify = verify
        self.low_memory = low_memory
        self.work_dir = work_dir
        self.slicing = _slicing_config(slicing)
        self.quantize_shortcuts = quantize_shortcuts
        self.post_init()

    def post_init(self):
        r"""Check every argument; raise a `ValueError` naming the parameter and what is allowed."""
        if not isinstance(self.backend, str) or self.backend not in BACKEND_BITS:
            raise ValueError(f"`backend` must be one of {sorted(BACKEND_BITS)}, got {self.backend!r}.")
        supported = BACKEND_BITS[self.backend]
        check_levels(self.bits)
        unsupported = [b for b in self.bits if b not in supported]
        if unsupported:
            raise ValueError(f"`bits` {unsupported} not supported by backend={self.backend!r}; allowed: {supported}.")
        check_budget(
            self.bits,
            target_bits=self.target_bits,
            memory_budget=self.memory_budget,
            num_low_bit_layers=self.num_low_bit_layers,
            required=False,
        )
        given = self.requested_budget()
        if self.layer_bits is not None and given:
            raise ValueError(f"Give `layer_bits` or a budget ({', '.join(given)}), not both.")
        check_importance(self.importance)
        if self.layer_costs is not None:
            check_layer_costs(self.layer_costs, self.bits)
        if self.unit_costs is not None:
            check_layer_costs(self.unit_costs, self.bits, parameter="unit_costs")
        if self.plan is not None and not isinstance(self.plan, QuantizationPlan):
            raise ValueError(f"`plan` must be a QuantizationPlan or its dict, got {type(self.plan).__name__}.")
        if self.layer_bits is not None:
            check_layer_bits(self.layer_bits, None, self.bits)
        if self.plan is not None:
            self.plan.check_levels(self.bits)
        self._check_granularity()
        if self.plan is not None and self.plan.quality is not None:
            QualityCheck.from_dict(self.plan.quality)
        check_calibration_settings(self)
        if not isinstance(self.verify, bool):
            raise ValueError(f"`verify` must be True or False, got {self.verify!r}.")
        if self.low_memory is not None and not isinstance(self.low_memory, bool):
            raise ValueError(
                f"`low_memory` must be True, False or None (decide from the memory), got {self.low_memory!r}."
            )
        if self.work_dir is not None and not isinstance(self.work_dir, (str, os.PathLike)):
            raise ValueError(f"`work_dir` must be a folder path, got {type(self.work_dir).__name__}.")
        if self.slicing is not None and self.backend != "quanto":
            raise ValueError(
                f"`slicing` is supported with backend='quanto' only, got backend={self.backend!r} (a sliced GPT-Q "
                "checkpoint would not load in GPTQModel or vLLM)."
            )
        if not isinstance(self.quantize_shortcuts, bool):
            raise ValueError(f"`quantize_shortcuts` must be True or False, got {self.quantize_shortcuts!r}.")
        if self.quantize_shortcuts and self.slicing is None:
            raise ValueError("`quantize_shortcuts=True` needs `slicing`: only a sliced model has shortcut matrices.")
        if self.slicing is not None and self.low_memory:
            raise ValueError("`slicing` rotates the whole model in memory: it cannot run with low_memory=True.")
        if self.group_size is not None and (
            isinstance(self.group_size, bool)
            or not isinstance(self.group_size, int)
            or self.group_size < 32
            or self.group_size % 32
        ):
            raise ValueError(f"`group_size` must be a positive multiple of 32 or None, got {self.group_size!r}.")
        if self.modules_to_not_convert is not None and (
            not isinstance(self.modules_to_not_convert, (list, tuple))
            or not all(isinstance(name, str) for name in self.modules_to_not_convert)
        ):
            raise ValueError(
                f"`modules_to_not_convert` must be a list of module names, got {self.modules_to_not_convert!r}."
            )
        self._check_backend_options()

    def _check_granularity(self) -> None:
        check_granularity(self.granularity)
        if self.granularity == "layer":
            if self.unit_costs is not None:
                raise ValueError("`unit_costs` are costs of blocks or modules: give granularity='block' or 'module'.")
            return
        method = IMPORTANCE_METHODS.get(self.importance) if isinstance(self.importance, str) else None
        if method is None or method.measure is None:
            measured = [name for name, method in IMPORTANCE_METHODS.items() if method.measure is not None]
            raise ValueError(
                f"granularity={self.granularity!r} allocates bits by the measured cost of each unit: `importance` "
                f"must be one of {measured}, got {self.importance!r:.60}."
            )
        per_layer = [name for name in ("layer_bits", "layer_costs", "num_low_bit_layers") if getattr(self, name)]
        if per_layer:
            raise ValueError(
                f"granularity={self.granularity!r} takes `target_bits` or `memory_budget`; {per_layer} describe "
                "whole layers (use granularity='layer')."
            )

    def _check_backend_options(self) -> None:
        for name in ("sym", "desc_act", "calibrated_costs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
        if self.backend != "gptq" and self.desc_act:
            raise ValueError(f"`desc_act` is a GPT-Q option; backend={self.backend!r} does not take it.")
        if self.optimizer not in QUANTO_OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {QUANTO_OPTIMIZERS}, got {self.optimizer!r:.40}.")
        if self.backend != "quanto" and self.optimizer != "max":
            raise ValueError(f"`optimizer` is an optimum-quanto option; backend={self.backend!r} does not take it.")
        if self.sym and self.optimizer == "hqq":
            raise ValueError("optimizer='hqq' refines an affine shift and has no symmetric form: pass sym=False.")

    def check_quantizable(self) -> None:
        """Raise a `ValueError` if this config cannot quantize a model (as opposed to loading a saved one)."""
        needs_data = needs_calibration_data(self.importance)
        measured = self.layer_costs is not None or self.unit_costs is not None
        if needs_data and self.dataset is None and self.layer_bits is None and not measured:
            raise ValueError(missing_data_message(self.importance))
        if self.dataset is None and self.quantization_backend().requires_calibration:
            how = f"backend={self.backend!r}"
            how += f" with optimizer={self.optimizer!r}" if self.backend == "quanto" else ""
            raise ValueError(
                f"{how} quantizes each layer from calibration data: pass `dataset` (a corpus name such as "
                "'shakespeare', a list of texts with `tokenizer`, token-id sequences or a text file path)."
            )

    def slicing_request(self) -> Any:
        """The `slicing` config to run: a copy, with this config's calibration data and tokenizer where it has none."""
        request = copy.copy(self.slicing)
        if request.dataset is None:
            request.dataset, request.dataset_sha256 = self.dataset, self.dataset_sha256
        request.tokenizer = request.tokenizer if request.tokenizer is not None else self.tokenizer
        return request

    def quantization_backend(self) -> QuantizationBackend:
        """The backend that packs the layers, with this config's options."""
        options = {"sym": self.sym, "desc_act": self.desc_act} if self.backend == "gptq" else {}
        options = {"optimizer": self.optimizer, "sym": self.sym} if self.backend == "quanto" else options
        return get_backend(self.backend, **options)

    def requested_budget(self) -> dict[str, Any]:
        """The budget given, as `{name: value}` (empty when none of `target_bits`, `memory_budget` and
        `num_low_bit_layers` is set)."""
        return {name: getattr(self, name) for name in BUDGET_NAMES if getattr(self, name) is not None}

    def budget(self) -> dict[str, Any]:
        """The budget a quantization meets: the one given, else `target_bits` at the mean of the highest and lowest
        level (half of the layers at the low level for two levels)."""
        return self.requested_budget() or {"target_bits": (max(self.bits) + min(self.bits)) / 2}

    def with_plan(self, plan: QuantizationPlan) -> LayerwiseQuantizationConfig:
        """A copy of this config (same request, same tokenizer and calibration data) holding `plan`."""
        result = copy.copy(self)
        result.plan = plan
        result.post_init()
        return result

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
        layerwise = self._layerwise_dict()
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

    def _layerwise_dict(self) -> dict[str, Any]:
        return {
            "quant_method": self.quant_method,
            "backend": self.backend,
            "bits": list(self.bits),
            "target_bits": self.target_bits,
            "memory_budget": self.memory_budget,
            "num_low_bit_layers": self.num_low_bit_layers,
            "layer_bits": {str(index): b for index, b in self.layer_bits.items()} if self.layer_bits else None,
            "importance": self.importance,
            "dataset": recorded_dataset_name(self.dataset),
            "dataset_sha256": self.dataset_sha256,
            "num_samples": self.num_samples,
            "seq_len": self.seq_len,
            "group_size": self.group_size,
            "modules_to_not_convert": self.modules_to_not_convert,
            "seed": self.seed,
            "layer_costs": (
                {str(i): {str(b): c for b, c in costs.items()} for i, costs in self.layer_costs.items()}
                if self.layer_costs
                else None
            ),
            **(
                {"sym": self.sym, "desc_act": self.desc_act, "calibrated_costs": self.calibrated_costs}
                if self.backend == "gptq"
                else {}
            ),
            **({"optimizer": self.optimizer, "sym": self.sym} if self.backend == "quanto" else {}),
            "quality_windows": self.quality_windows,
            "unit_costs": (
                {name: {str(b): c for b, c in costs.items()} for name, costs in self.unit_costs.items()}
                if self.unit_costs
                else None
            ),
            "granularity": self.granularity,
            "plan": self.plan.to_dict() if self.plan is not None else None,
            **(
                {"slicing": self.slicing.to_dict(), "quantize_shortcuts": self.quantize_shortcuts}
                if self.slicing is not None
                else {}
            ),
        }

    def _gptq_dynamic(self) -> dict[str, dict[str, int]] | None:
        if self.plan is None or not self.plan.layers_path:
            return None
        return self.quantization_backend().dynamic_overrides(self.plan, self.bits[0])


def _slicing_config(slicing: Any) -> Any:
    """`slicing` as a `LayerwiseSlicingConfig` (also from its saved dict)."""
    from .slicing_config import LayerwiseSlicingConfig

    if isinstance(slicing, Mapping):
        slicing = LayerwiseSlicingConfig.from_dict(dict(slicing))
    if slicing is not None and not isinstance(slicing, LayerwiseSlicingConfig):
        raise ValueError(f"`slicing` must be a LayerwiseSlicingConfig or its dict, got {type(slicing).__name__}.")
    return slicing


_ARGUMENTS = signature_arguments(LayerwiseQuantizationConfig.__init__)


def planned_config(model: Any, config_class: type) -> Any:
    """`model.config.quantization_config` when it is a `config_class` holding a plan (the model was compressed or
    loaded compressed by this package), else `None`."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    return config if isinstance(config, config_class) and config.plan is not None else None
