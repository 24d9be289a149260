"""optimum-quanto backend: round-to-nearest weight quantization at int2, int4 or int8."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch
from torch import nn
from transformers.utils import logging

from ..modules import QuantoLinear, quanto_tensor_specs, scale_dtype
from .base import QuantizationBackend


logger = logging.get_logger(__name__)


def quanto_extension_built() -> bool:
    """Whether optimum-quanto's C++ CPU extension (`quanto_cpp`, which unpacks 2/4-bit weights) is already compiled
    for the installed torch (it compiles itself on first use, into its own package folder)."""
    spec = importlib.util.find_spec("optimum.quanto")
    if spec is None or not spec.submodule_search_locations:
        return False
    build = Path(spec.submodule_search_locations[0]) / "library" / "extensions" / "cpp" / "build"
    version = build / "pytorch_version.txt"
    built = (build / "quanto_cpp.so").is_file() and version.is_file()
    return built and version.read_text().strip() == torch.__version__


def build_quanto_extension() -> float:
    """Compile optimum-quanto's C++ CPU extension now, with a message, rather than silently at the first forward
    pass; returns the seconds it took (0 when it was already built). Needs a C++ compiler and ninja."""
    if quanto_extension_built():
        return 0.0
    logger.warning(
        "Compiling optimum-quanto's C++ extension once for this environment (about 1 min on 2 cores, up to 10 on a "
        "busy machine; needs a C++ compiler)..."
    )
    start = time.perf_counter()
    from optimum.quanto.library.extensions import get_extension

    try:
        _ = get_extension("quanto_cpp").lib  # the property compiles and loads it
    except Exception as error:  # no compiler or ninja: quanto tries again (and fails the same way) at first use
        logger.warning(f"optimum-quanto's C++ extension could not be compiled: {error}")
        return time.perf_counter() - start
    seconds = time.perf_counter() - start
    logger.warning(f"optimum-quanto's C++ extension compiled in {seconds:.0f} s; later runs reuse it.")
    return seconds


class ImportanceCalibrator:
    """Accumulates the mean squared input of each input channel of one Linear (llama.cpp's importance matrix), then
    packs it with `optimizer="imatrix"`: scales and shifts that minimise the rounding error weighted by it.

    Args:
        linear (`nn.Linear`):
            The full-precision Linear (left untouched).
        bits (`int`), group_size (`int`, *optional*):
            Level and effective group size.
        sym (`bool`, *optional*, defaults to `False`):
            Symmetric int2/int4 grid (see [`QuantoBackend`]).
    """

    def __init__(self, linear: nn.Linear, bits: int, group_size: int | None, sym: bool = False):
        self.linear, self.bits, self.group_size, self.sym = linear, bits, group_size, sym
        self.sum_of_squares = torch.zeros(linear.in_features, dtype=torch.float64, device=linear.weight.device)
        self.num_inputs = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        """Add calibration inputs of shape `(tokens, in_features)`."""
        flat = inputs.detach().reshape(-1, self.linear.in_features)
        self.sum_of_squares += flat.double().square().sum(dim=0)
        self.num_inputs += flat.shape[0]

    def finish(self) -> nn.Module:
        """The packed module (uniform importance when no input was added)."""
        importance = self.sum_of_squares / self.num_inputs if self.num_inputs else None
        return QuantoLinear.from_linear(self.linear, self.bits, self.group_size, "imatrix", importance, self.sym)


class QuantoBackend(QuantizationBackend):
    """Weights-only RTN quantization by optimum-quanto: asymmetric group-wise for int2/int4 (scale and shift per
    group), symmetric per output channel for int8, as quanto does.

    Args:
        optimizer (`str`, *optional*, defaults to `"max"`):
            How int2/int4 scales and shifts are chosen: `"max"` (each group's range), `"hqq"` (quanto's HQQ: the
            shift refined to minimise the rounding error, still without data) or `"imatrix"` (searched to minimise
            the rounding error weighted by each input channel's mean squared calibration input; the backend then
            quantizes layer by layer from calibration data, as GPT-Q does).
        sym (`bool`, *optional*, defaults to `False`):
            int2/int4 on a symmetric grid (integer zero-point `2**(bits - 1)`, only the scale chosen) rather than an
            affine one: slightly less accurate, but exported to compressed-tensors without loss
            (`optimum_layerwise.export`).
    """

    name = "quanto"
    requirement = "optimum-quanto"

    def __init__(self, optimizer: str = "max", sym: bool = False):
        self.optimizer, self.sym = optimizer, sym
        self.requires_calibration = optimizer == "imatrix"

    def is_available(self) -> bool:
        return importlib.util.find_spec("optimum.quanto") is not None

    def require(self) -> None:
        """Raise if optimum-quanto is missing; compile its C++ CPU extension now, announced, if it is not yet."""
        super().require()
        build_quanto_extension()

    def tensor_specs(self, out_features, in_features, bits, group_size):
        return quanto_tensor_specs(out_features, in_features, bits, None if bits == 8 else group_size)

    def linear_nbytes(self, out_features, in_features, bits, group_size, float_dtype: torch.dtype) -> int:
        """Exact bytes of one packed Linear; its scales and shifts are stored in [`scale_dtype`] of `float_dtype`."""
        return super().linear_nbytes(out_features, in_features, bits, group_size, scale_dtype(float_dtype))

    def level_settings(self, bits: int, group_size: int | None) -> dict:
        """int8 is symmetric per output channel; int2/int4 per group, asymmetric (scale and shift) unless `sym`."""
        return {"sym": True, "group_size": None} if bits == 8 else {"sym": self.sym, "group_size": group_size}

    def is_packed(self, module: nn.Module) -> bool:
        return isinstance(module, QuantoLinear)

    def dequantized_weight(self, module: nn.Module) -> torch.Tensor:
        return module.dequantized_weight()

    def calibrator(self, linear: nn.Linear, bits: int, group_size: int | None) -> ImportanceCalibrator:
        """`optimizer="imatrix"` only: an accumulator of `linear`'s calibration inputs that packs it weighted by
        them."""
        if not self.requires_calibration:
            return super().calibrator(linear, bits, group_size)
        return ImportanceCalibrator(linear, bits, group_size, self.sym)

    def quantize_linear(self, linear: nn.Linear, bits: int, group_size: int | None) -> nn.Module:
        """Round-to-nearest with the backend's optimizer (`"imatrix"` without data: uniform importance)."""
        return QuantoLinear.from_linear(linear, bits, group_size, self.optimizer, sym=self.sym)

    def empty_linear(self, in_features, out_features, bits, group_size, bias, dtype: torch.dtype) -> nn.Module:
        return QuantoLinear(in_features, out_features, bits, group_size, bias=bias, dtype=dtype, device="meta")
