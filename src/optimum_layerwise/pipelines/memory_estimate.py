"""Predict the peak resident memory of a job before any weight is loaded, and choose the path that fits.

A prediction is a sum of named parts, each from the model's shape ([`~optimum_layerwise.model.shape.ModelShape`], read
on the meta device), the request and the calibration size:

- `process`: what this process holds once it has imported the job's libraries (optimum-quanto, gptqmodel: the
  prediction imports them), plus what the job's first steps add ([`RUNTIME_BYTES`]);
- `weights`: the whole model in its compute dtype (in memory), or the modules outside the decoder layers and two
  decoder layers (layer by layer: the layer being quantized and the next one being read);
- `checkpoint pages`: a checkpoint stored in another dtype than the compute dtype stays mapped while it is converted;
- `working set`: the largest of the job's phases, which run one after another: the calibration walk (every window's
  hidden states entering and leaving the current layer, plus one batch through one layer), the sensitivity
  measurement (the walk plus the layer's quantized versions and their outputs), packing one layer (a float copy of
  it and temporaries of its largest Linear; inside the calibration walk for GPT-Q, with each Linear's Hessian, and
  for quanto's `imatrix` optimizer), the
  held-out check (one window through the model, its logits in float32) and slicing (every window's hidden states
  in several bases, the rotation, rotated copies);
- `saving` (instead of `weights` and `working set` when it is larger): the packed layers' checkpoint tensors that
  transformers' save holds at once (in memory: all of them; layer by layer: the shard being read back from the work
  folder, at most [`~optimum_layerwise.model.footprint.MAX_SHARD_BYTES`]; in memory, as much again for the shard
  being written).

Working sets count [`SPREAD`] more than their sum (the run-to-run spread of a peak). After slicing, quantization runs
next to a second copy of the model (rotated weights and shortcuts; the checkpoint's pages stay mapped). The parts are
upper bounds of what was measured by `bench/memory.py` (docs/results.md, "Predicted and measured peak memory");
[`choose_path`] adds [`MARGIN`] on top.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..data.calibration import CALIBRATION_BATCH_SIZE
from ..importance.sensitivity import SCORING_WINDOWS
from ..model.footprint import MAX_SHARD_BYTES
from ..model.shape import ModelShape
from ..plan.importance_methods import IMPORTANCE_METHODS
from ..plan.request import QuantizationRequest
from ..plan.slicing_request import SlicingRequest
from ..utils.system_memory import process_memory_limit, resident_bytes
from ..utils.units import format_bytes


MARGIN = 1.05  # a path is taken when its prediction times this fits the memory the process may use

# the libraries a job imports: imported by the prediction itself, so that the process it measures holds them
LIBRARIES = {None: (), "quanto": ("optimum.quanto",), "gptq": ("optimum.quanto", "gptqmodel")}
# what a job's first steps add to a process that has imported its libraries: the modules it imports lazily and
# torch's first buffers (measured on the tiny test model: 61 MiB on top of the imports)
RUNTIME_BYTES = 64 << 20
FLOAT32 = 4
# the peak of the same job varies between runs by up to about 0.1 GiB on SmolLM2-135M (freed temporaries kept in the
# heap, bench/results/streaming-gptq-h2048-*.json): working sets count this much more
SPREAD = 1.10


@dataclass(frozen=True)
class MemoryEstimate:
    """The predicted peak resident bytes of one job on one path.

    Args:
        job (`str`): `"quantize"`, `"score"`, `"slice"` or `"slice+quantize"`.
        path (`str`): `"in memory"` or `"layer by layer"` (decoder layers read from the checkpoint's files one at a
            time, quantized ones written to a work folder).
        parts (`Mapping[str, int]`): the bytes of each part (see the module's docstring).
    """

    job: str
    path: str
    parts: Mapping[str, int] = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        """One line, e.g. `"quantize in memory: 1.4 GiB (process 380 MiB + weights 513 MiB + ...)"`."""
        shown = " + ".join(f"{name} {format_bytes(value)}" for name, value in self.parts.items() if value)
        return f"{self.job} {self.path}: {format_bytes(self.peak_bytes)} ({shown})"


def _process(backend: str | None) -> int:
    """What this process holds once it has imported the libraries of `backend`'s job, plus [`RUNTIME_BYTES`]."""
    for name in LIBRARIES[backend]:
        if importlib.util.find_spec(name) is not None:  # a missing one is reported by the backend's own check
            importlib.import_module(name)
    return resident_bytes() + RUNTIME_BYTES


def _layer_forward(shape: ModelShape, windows: int, seq_len: int) -> int:
    """One batch of `windows` through one decoder layer: 12 hidden-wide tensors per token (input, norm, queries, keys
    and values repeated to every head, attention output, residual, the copies the calibration hooks take), 6
    intermediate-wide ones (the MLP's gate, up, activation, product, the down projection's recorded input) and the
    attention scores and probabilities in float32. On SmolLM2-135M (8 windows of 512 tokens) the calibration walk
    measured 400 MB over the model, this part and the stored hidden states give 434 MB."""
    tokens = windows * seq_len
    hidden = tokens * (12 * shape.hidden_size + 6 * shape.intermediate_size) * shape.element_size
    return hidden + 2 * windows * shape.num_heads * seq_len * seq_len * FLOAT32


def _walk(shape: ModelShape, windows: int, seq_len: int) -> int:
    """The calibration walk: every window's hidden states entering and leaving the current layer, and one batch
    through it."""
    stored = 2 * windows * seq_len * shape.hidden_size * shape.element_size
    return stored + _layer_forward(shape, min(windows, CALIBRATION_BATCH_SIZE), seq_len)


def _held_out_check(shape: ModelShape, seq_len: int) -> int:
    """One window through the whole model: one layer's forward and the logits (compute dtype, then float32)."""
    return _layer_forward(shape, 1, seq_len) + seq_len * shape.vocab_size * (shape.element_size + 2 * FLOAT32)


def _packing(shape: ModelShape) -> int:
    """Packing one layer: a float copy of the layer (its dequantized or calibrated versions) and float32 temporaries
    of its largest Linear (the scale search of the `mse` and `imatrix` optimizers keeps about six)."""
    return shape.largest_layer_bytes + 6 * shape.largest_linear * FLOAT32


def _sensitivity(shape: ModelShape, request: QuantizationRequest) -> int:
    """The walk over the scoring windows, plus one layer's versions at each lower level (float copies of dequantized
    weights) and the outputs they are compared with."""
    windows = min(request.num_samples, SCORING_WINDOWS)
    levels = max(len(request.bits) - 1, 1)
    outputs = 2 * windows * request.seq_len * shape.hidden_size * FLOAT32
    return _walk(shape, windows, request.seq_len) + levels * shape.largest_layer_bytes + outputs + _packing(shape)


def _calibrated_packing(shape: ModelShape, request: QuantizationRequest) -> int:
    """Packing inside the calibration walk over all windows (GPT-Q, quanto's `imatrix` optimizer); GPT-Q adds each
    Linear's Hessian (in_features squared, float32) for the whole layer."""
    hessians = (
        sum(columns * columns for _, columns in shape.linear_shapes) * FLOAT32 if request.backend == "gptq" else 0
    )
    return _walk(shape, request.num_samples, request.seq_len) + hessians + _packing(shape)


def _scoring(shape: ModelShape, request: QuantizationRequest) -> int:
    method = request.importance
    if not isinstance(method, str) or request.dataset is None:
        return 0
    if method.startswith("sensitivity"):
        return _sensitivity(shape, request)
    return _walk(shape, request.num_samples, request.seq_len) if IMPORTANCE_METHODS[method].needs_data else 0


def _quantize_working_set(shape: ModelShape, request: QuantizationRequest) -> int:
    calibrated = request.dataset is not None and (request.backend == "gptq" or request.optimizer == "imatrix")
    phases = [_scoring(shape, request), _calibrated_packing(shape, request) if calibrated else _packing(shape)]
    if request.dataset is not None and request.quality_windows:
        phases.append(_held_out_check(shape, request.seq_len))
    return max(phases)


def _saving(shape: ModelShape, request: QuantizationRequest, low_memory: bool) -> int:
    """The save: the packed layers' checkpoint tensors transformers holds at once. In memory: all of them, and as much
    again for the shard being written. Layer by layer: the shard being written, each of its tensors read back from
    the work folder as a copy (the file's mapping is dropped at once). Packed bytes are bounded by the highest level,
    plus a 16-bit scale and shift per group of 128 (group-wise) or per row."""
    bits = max(request.bits) + 0.5
    packed = int(sum(shape.layer_bytes) * bits / (8 * shape.element_size))
    return min(packed, MAX_SHARD_BYTES) if low_memory else 2 * packed


def _weights(shape: ModelShape, low_memory: bool) -> int:
    return shape.other_bytes + 2 * shape.largest_layer_bytes if low_memory else shape.total_bytes


def _slicing_working_set(shape: ModelShape, request: SlicingRequest) -> int:
    """Rotating one layer holds six hidden-state sets of every calibration window at once (its inputs, the attention
    outputs, the stream after the attention in two bases, the layer's outputs and the next layer's inputs), plus one
    batch through the layer, the rotation (hidden squared, float64, a few copies), a rotated copy of the largest layer
    and of the embeddings and head (untied and rotated). On SmolLM2-135M (128 windows of 512 tokens) slicing measured
    1.23 GiB over the model, this gives 1.42 GiB."""
    stored = 6 * request.num_samples * request.seq_len * shape.hidden_size * shape.element_size
    forward = _layer_forward(shape, min(request.num_samples, CALIBRATION_BATCH_SIZE), request.seq_len)
    rotation = 4 * shape.hidden_size * shape.hidden_size * 8
    return stored + forward + rotation + shape.largest_layer_bytes + shape.other_bytes


def _shortcut_bytes(shape: ModelShape) -> int:
    """The two shortcut matrices slicing adds to each layer, at most hidden x hidden each."""
    return shape.num_layers * 2 * shape.hidden_size * shape.hidden_size * shape.element_size


def estimate_memory(
    shape: ModelShape,
    request: QuantizationRequest | SlicingRequest,
    *,
    low_memory: bool = False,
    checkpoint_bytes: int | None = None,
) -> MemoryEstimate:
    """The predicted peak of `request` on a model of `shape`.

    Args:
        shape ([`ModelShape`]):
            The model, in the dtype it computes in.
        request ([`QuantizationRequest`] or [`SlicingRequest`]):
            A quantization (possibly slicing first) or a slicing.
        low_memory (`bool`, *optional*, defaults to `False`):
            Predict the layer-by-layer path (quantization without slicing only).
        checkpoint_bytes (`int`, *optional*):
            Bytes of the checkpoint's weights when they are stored in another dtype than the compute dtype (they stay
            mapped while they are converted).

    Returns:
        [`MemoryEstimate`]
    """
    slicing = request if isinstance(request, SlicingRequest) else request.slicing
    backend = request.backend if isinstance(request, QuantizationRequest) else None
    parts = {"process": _process(backend), "weights": _weights(shape, low_memory)}
    if checkpoint_bytes:
        parts["checkpoint pages"] = checkpoint_bytes if not low_memory else 2 * shape.largest_layer_bytes
    working = [_slicing_working_set(shape, slicing)] if slicing is not None else []
    if isinstance(request, QuantizationRequest):
        # after slicing, the rotated model and its shortcuts are a second copy next to the checkpoint's mapped pages
        rotated = shape.total_bytes + _shortcut_bytes(shape) if slicing is not None else 0
        working.append(rotated + _quantize_working_set(shape, request))
    parts["working set"] = int(max(working) * SPREAD)
    if isinstance(request, QuantizationRequest):
        saving = _saving(shape, request, low_memory)
        if saving > parts["weights"] + parts["working set"]:  # the save is the peak: other parts are gone by then
            parts = {"process": parts["process"], "weights": shape.other_bytes, "saving": saving}
    job = "quantize" if slicing is None else ("slice" if backend is None else "slice+quantize")
    return MemoryEstimate(job, "layer by layer" if low_memory else "in memory", parts)


def estimate_scoring_memory(
    shape: ModelShape, request: QuantizationRequest, *, checkpoint_bytes: int | None = None
) -> MemoryEstimate:
    """The predicted peak of scoring the decoder layers of a model of `shape` with `request.importance` (the `score`
    command): the whole model in memory, and the scoring phase (the calibration walk, or the sensitivity measurement;
    for the methods that need no data, a float64 copy of one layer, as ZD takes).

    Args:
        shape ([`ModelShape`]), checkpoint_bytes:
            As for [`estimate_memory`].
        request ([`QuantizationRequest`]):
            Its importance method and calibration settings (`importance`, `dataset`, `num_samples`, `seq_len`).

    Returns:
        [`MemoryEstimate`]
    """
    parts = {"process": _process(request.backend), "weights": shape.total_bytes}
    if checkpoint_bytes:
        parts["checkpoint pages"] = checkpoint_bytes
    parts["working set"] = int((_scoring(shape, request) or 2 * shape.largest_layer_bytes) * SPREAD)
    return MemoryEstimate("score", "in memory", parts)


def can_stream(request: QuantizationRequest | SlicingRequest) -> bool:
    """Whether `request` has a layer-by-layer path: quantization without slicing, and without the KL sensitivity
    (which runs the whole model once per layer and level)."""
    return (
        isinstance(request, QuantizationRequest) and request.slicing is None and request.importance != "sensitivity_kl"
    )


@dataclass(frozen=True)
class PathChoice:
    """The path a job takes and why.

    Args:
        low_memory (`bool`): whether it runs layer by layer.
        estimate ([`MemoryEstimate`]): the prediction of the chosen path.
        reason (`str`): what was compared, e.g. `"with 5% margin, 1.3 GiB fits the 20.7 GiB this process may use"`.
        estimates (`tuple[MemoryEstimate, ...]`): the prediction of every path considered.
    """

    low_memory: bool
    estimate: MemoryEstimate
    reason: str
    estimates: tuple[MemoryEstimate, ...] = ()

    def summary(self) -> str:
        """One line: the chosen path's prediction and why it was taken."""
        return f"{self.estimate.describe()}; {self.reason}"


def choose_path(
    shape: ModelShape,
    request: QuantizationRequest | SlicingRequest,
    *,
    requested: bool | None = None,
    checkpoint_bytes: int | None = None,
    limit: int | None = None,
) -> PathChoice:
    """Take the in-memory path when its prediction (times [`MARGIN`]) fits the memory this process may use, else the
    layer-by-layer one when the request has it and it fits.

    Args:
        shape ([`ModelShape`]), request, checkpoint_bytes:
            As for [`estimate_memory`].
        requested (`bool`, *optional*):
            `low_memory` as the user gave it: that path is taken (and checked), whatever fits better.
        limit (`int`, *optional*):
            The memory the process may use (by default [`~optimum_layerwise.utils.system_memory.process_memory_limit`];
            `None` there means unknown, and nothing is refused).

    Raises:
        `MemoryError`: when no allowed path fits, naming the memory it needs and the memory there is.
    """
    limit = process_memory_limit() if limit is None else limit
    paths = [False, True] if can_stream(request) else [False]
    if requested is not None:
        paths = [requested]
    estimates = [estimate_memory(shape, request, low_memory=path, checkpoint_bytes=checkpoint_bytes) for path in paths]
    for path, estimate in zip(paths, estimates):
        reason = _fits(estimate, limit)
        if reason is not None:
            return PathChoice(path, estimate, reason, tuple(estimates))
    smallest = min(estimates, key=lambda estimate: estimate.peak_bytes)
    hint = "" if len(paths) > 1 or not can_stream(request) else "; the other path (low_memory) may fit"
    raise MemoryError(_refusal(smallest, limit) + hint + ".")


def check_fits(estimate: MemoryEstimate, limit: int | None = None) -> PathChoice:
    """The choice of a job that has one path (`estimate`), when it fits the memory this process may use.

    Args:
        estimate ([`MemoryEstimate`]):
            The job's prediction.
        limit (`int`, *optional*):
            As for [`choose_path`].

    Raises:
        `MemoryError`: when it does not fit, naming the memory it needs and the memory there is.
    """
    limit = process_memory_limit() if limit is None else limit
    reason = _fits(estimate, limit)
    if reason is None:
        raise MemoryError(_refusal(estimate, limit) + ".")
    return PathChoice(estimate.path == "layer by layer", estimate, reason, (estimate,))


def _fits(estimate: MemoryEstimate, limit: int | None) -> str | None:
    """Why `estimate` (times [`MARGIN`]) fits `limit` (`None`: unknown memory, nothing is refused), or `None`."""
    needed = int(estimate.peak_bytes * MARGIN)
    if limit is not None and needed > limit:
        return None
    there = f"the {format_bytes(limit)} this process may use" if limit is not None else "unknown memory"
    return f"with {MARGIN - 1:.0%} margin, {format_bytes(needed)} fits {there}"


def _refusal(estimate: MemoryEstimate, limit: int) -> str:
    return (
        f"Not enough memory: {estimate.describe()}, {format_bytes(int(estimate.peak_bytes * MARGIN))} with "
        f"{MARGIN - 1:.0%} margin, but this process may use {format_bytes(limit)}"
    )
