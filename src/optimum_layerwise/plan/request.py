"""The quantization request as a frozen value: what a user asks for, its defaults, its checks and its saved form.

[`~optimum_layerwise.LayerwiseQuantizationConfig`] (in `hf/`) wraps it for transformers, as transformers'
`CompressedTensorsConfig` wraps compressed-tensors' own config; the pipelines take this value. Its fields are the
config's arguments, documented there.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.dataset_record import dataset_fingerprint, recorded_dataset_name
from .allocation import check_budget, check_levels
from .backends import QUANTO_OPTIMIZERS, backend_spec
from .fields import (
    BUDGET_NAMES,
    check_granularity,
    check_layer_bits,
    check_layer_costs,
    normalize_layer_bits,
    normalize_layer_costs,
    normalize_unit_costs,
)
from .importance_methods import (
    IMPORTANCE_METHODS,
    check_importance,
    importance_scores,
    missing_data_message,
    needs_calibration_data,
)
from .quality import QualityCheck
from .quantization_plan import QuantizationPlan
from .slicing_request import SlicingRequest, check_calibration_settings


def default_num_samples(backend: str) -> int:
    """Calibration windows used when `num_samples` is not given: few for scoring, many for GPT-Q's calibration."""
    return 128 if backend == "gptq" else 8


def default_optimizer(backend: str, dataset: Any) -> str:
    """The quanto optimizer used when `optimizer` is not given: `"imatrix"` when there is calibration data (it gave
    the lowest held-out perplexity at every budget measured in docs/frontier.md), else `"max"`; `"max"` (no option)
    for other backends."""
    return "imatrix" if backend == "quanto" and dataset is not None else "max"


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")


@dataclass(frozen=True)
class QuantizationRequest:
    """What to quantize, how, and to which budget (see [`~optimum_layerwise.LayerwiseQuantizationConfig`] for each
    field). Built from the user's arguments, normalized (`bits` as a tuple, maps with int keys, defaults that depend on
    `backend` and `dataset` filled in) and checked: an invalid request raises a `ValueError` naming the parameter and
    what is allowed, and never exists. `tokenizer`, `low_memory` and `work_dir` are not saved."""

    bits: tuple[int, ...] = (8, 4)
    backend: str = "quanto"
    target_bits: float | None = None
    memory_budget: int | str | None = None
    num_low_bit_layers: int | None = None
    layer_bits: Mapping[int, int] | None = None
    importance: str | Sequence[float] = "sensitivity"
    dataset: Any = field(default=None, compare=False)
    tokenizer: Any = field(default=None, compare=False, repr=False)
    num_samples: int | None = None
    seq_len: int = 512
    group_size: int | None = 128
    modules_to_not_convert: Sequence[str] | None = None
    seed: int = 0
    layer_costs: Mapping[int, Mapping[int, float]] | None = None
    sym: bool | None = None
    desc_act: bool = False
    optimizer: str | None = None
    calibrated_costs: bool = True
    dataset_sha256: str | None = None
    quality_windows: int = 4
    unit_costs: Mapping[str, Mapping[int, float]] | None = None
    granularity: str = "layer"
    low_memory: bool | None = None
    work_dir: str | os.PathLike | None = None
    slicing: SlicingRequest | None = None
    quantize_shortcuts: bool = False

    def __post_init__(self):
        set_field = object.__setattr__
        backend_spec(self.backend)
        if isinstance(self.bits, (list, tuple)):
            set_field(self, "bits", tuple(self.bits))
        if self.layer_bits is not None:
            set_field(self, "layer_bits", normalize_layer_bits(self.layer_bits))
        if not isinstance(self.importance, str):
            set_field(self, "importance", importance_scores(self.importance))
        if self.dataset_sha256 is None:
            set_field(self, "dataset_sha256", dataset_fingerprint(self.dataset))
        if self.num_samples is None:
            set_field(self, "num_samples", default_num_samples(self.backend))
        if self.layer_costs is not None:
            set_field(self, "layer_costs", normalize_layer_costs(self.layer_costs))
        if self.sym is None:
            set_field(self, "sym", self.backend == "gptq")
        if self.optimizer is None:
            set_field(self, "optimizer", default_optimizer(self.backend, self.dataset))
        if self.unit_costs is not None:
            set_field(self, "unit_costs", normalize_unit_costs(self.unit_costs))
        if isinstance(self.slicing, Mapping):
            set_field(self, "slicing", SlicingRequest.from_dict(self.slicing))
        self._check()

    def _check(self) -> None:
        supported = backend_spec(self.backend).bits
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
        if self.layer_bits is not None:
            check_layer_bits(self.layer_bits, None, self.bits)
        self._check_granularity()
        check_calibration_settings(self)
        if self.low_memory is not None and not isinstance(self.low_memory, bool):
            raise ValueError(
                f"`low_memory` must be True, False or None (decide from the memory), got {self.low_memory!r}."
            )
        if self.work_dir is not None and not isinstance(self.work_dir, (str, os.PathLike)):
            raise ValueError(f"`work_dir` must be a folder path, got {type(self.work_dir).__name__}.")
        self._check_slicing()
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

    def _check_slicing(self) -> None:
        if self.slicing is not None and not isinstance(self.slicing, SlicingRequest):
            raise ValueError(
                f"`slicing` must be a LayerwiseSlicingConfig or its dict, got {type(self.slicing).__name__}."
            )
        if self.slicing is not None and self.backend != "quanto":
            raise ValueError(
                f"`slicing` is supported with backend='quanto' only, got backend={self.backend!r} (a sliced GPT-Q "
                "checkpoint would not load in GPTQModel or vLLM)."
            )
        _bool("quantize_shortcuts", self.quantize_shortcuts)
        if self.quantize_shortcuts and self.slicing is None:
            raise ValueError("`quantize_shortcuts=True` needs `slicing`: only a sliced model has shortcut matrices.")
        if self.slicing is not None and self.low_memory:
            raise ValueError("`slicing` rotates the whole model in memory: it cannot run with low_memory=True.")

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
            _bool(name, getattr(self, name))
        if self.backend != "gptq" and self.desc_act:
            raise ValueError(f"`desc_act` is a GPT-Q option; backend={self.backend!r} does not take it.")
        if self.optimizer not in QUANTO_OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {QUANTO_OPTIMIZERS}, got {self.optimizer!r:.40}.")
        if self.backend != "quanto" and self.optimizer != "max":
            raise ValueError(f"`optimizer` is an optimum-quanto option; backend={self.backend!r} does not take it.")
        if self.sym and self.optimizer == "hqq":
            raise ValueError("optimizer='hqq' refines an affine shift and has no symmetric form: pass sym=False.")

    def check_plan(self, plan: Any) -> None:
        """Check that `plan` (a [`QuantizationPlan`] or `None`) can belong to this request: its levels, its quality."""
        if plan is None:
            return
        if not isinstance(plan, QuantizationPlan):
            raise ValueError(f"`plan` must be a QuantizationPlan or its dict, got {type(plan).__name__}.")
        plan.check_levels(self.bits)
        if plan.quality is not None:
            QualityCheck.from_dict(plan.quality)

    def check_quantizable(self) -> None:
        """Raise a `ValueError` if this request cannot quantize a model (as opposed to loading a saved one)."""
        needs_data = needs_calibration_data(self.importance)
        measured = self.layer_costs is not None or self.unit_costs is not None
        if needs_data and self.dataset is None and self.layer_bits is None and not measured:
            raise ValueError(missing_data_message(self.importance))
        if self.dataset is None and self.requires_calibration():
            how = f"backend={self.backend!r}"
            how += f" with optimizer={self.optimizer!r}" if self.backend == "quanto" else ""
            raise ValueError(
                f"{how} quantizes each layer from calibration data: pass `dataset` (a corpus name such as "
                "'shakespeare', a list of texts with `tokenizer`, token-id sequences or a text file path)."
            )

    def backend_options(self) -> dict[str, Any]:
        """The options this request passes to its backend's constructor."""
        return {name: getattr(self, name) for name in backend_spec(self.backend).options}

    def requires_calibration(self) -> bool:
        """Whether the backend, with this request's options, quantizes each layer from calibration data."""
        return backend_spec(self.backend).calibrated(self.backend_options())

    def requested_budget(self) -> dict[str, Any]:
        """The budget given, as `{name: value}` (empty when none of `target_bits`, `memory_budget` and
        `num_low_bit_layers` is set)."""
        return {name: getattr(self, name) for name in BUDGET_NAMES if getattr(self, name) is not None}

    def budget(self) -> dict[str, Any]:
        """The budget a quantization meets: the one given, else `target_bits` at the mean of the highest and lowest
        level (half of the layers at the low level for two levels)."""
        return self.requested_budget() or {"target_bits": (max(self.bits) + min(self.bits)) / 2}

    def slicing_request(self) -> SlicingRequest:
        """The `slicing` request to run, with this request's calibration data and tokenizer where it has none."""
        slicing = self.slicing
        if slicing.dataset is None:
            slicing = dataclasses.replace(slicing, dataset=self.dataset, dataset_sha256=self.dataset_sha256)
        if slicing.tokenizer is None:
            slicing = dataclasses.replace(slicing, tokenizer=self.tokenizer)
        return slicing

    def replace(self, **changes: Any) -> QuantizationRequest:
        """A copy with `changes`, normalized and checked again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The saved form (JSON-safe; the tokenizer, in-memory calibration data and run-only options left out)."""
        options = {name: getattr(self, name) for name in ("sym", "desc_act", "calibrated_costs")}
        options = {"optimizer": self.optimizer, "sym": self.sym} if self.backend == "quanto" else options
        return {
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
            "layer_costs": _costs_dict(self.layer_costs),
            **options,
            "quality_windows": self.quality_windows,
            "unit_costs": _costs_dict(self.unit_costs),
            "granularity": self.granularity,
            **(
                {"slicing": self.slicing.to_dict(), "quantize_shortcuts": self.quantize_shortcuts}
                if self.slicing is not None
                else {}
            ),
        }


def _costs_dict(costs: Mapping[Any, Mapping[int, float]] | None) -> dict[str, dict[str, float]] | None:
    return {str(unit): {str(b): c for b, c in levels.items()} for unit, levels in costs.items()} if costs else None
