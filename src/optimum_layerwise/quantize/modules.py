"""Packed-weight modules: the serialized format of a quantized Linear, as plain tensors.

Plain tensors (not quanto tensor subclasses), held as frozen `nn.Parameter`s, are what transformers' stock loader,
accelerate device maps and disk offload understand (accelerate offloads parameters, not buffers). The module rebuilds
the optimum-quanto weight tensor from them at forward time, so quanto's kernels do the arithmetic.

Tensors of a [`QuantoLinear`] with `bits` and effective group size `g` (`None` = per output channel):

| bits | `weight`                                        | `weight_scale`      | `weight_shift`      |
|------|-------------------------------------------------|---------------------|---------------------|
| 8    | int8 `(out · in,)`                              | `(out, 1)`          | -                   |
| 4, 2 | uint8 `(⌈R / (8 / bits)⌉, C)`, quanto's packing | `(R, 1)`            | `(R, 1)`            |

with `(R, C) = (out · in / g, g)` for groups and `(out, in)` per channel. Scale and shift are stored in 16 bits
([`scale_dtype`]: float16 for a float32 model, else the model's dtype) and the codes are computed with the stored
values, so the weights are exactly what the checkpoint says; they are cast to the activations' dtype to compute.
A checkpoint saved with float32 scales (before this rule) loads with float32 scales.
The packed `weight` never has the original `(out, in)` shape (int8 codes are stored flattened), so loading a
checkpoint without `import optimum_layerwise` fails on the shapes instead of reading codes as float weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..plan.backends import BACKEND_BITS
from .weighted_rounding import as_stored, weighted_affine


QUANTO_BITS = BACKEND_BITS["quanto"]


def scale_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the scales and shifts of a model in `dtype`: float16 for float32 (half the bytes of the overhead,
    0.33 instead of 0.67 bits per weight at group size 96; float16 keeps 11 significant bits), else `dtype`."""
    return torch.float16 if dtype == torch.float32 else dtype


def quanto_tensor_specs(
    out_features: int, in_features: int, bits: int, group_size: int | None
) -> dict[str, tuple[tuple[int, ...], torch.dtype | None]]:
    """Shapes and dtypes of the tensors of a [`QuantoLinear`] (`None` dtype = the model's float dtype).

    Args:
        out_features (`int`), in_features (`int`):
            Shape of the original Linear weight.
        bits (`int`):
            2, 4 or 8.
        group_size (`int`, *optional*):
            Effective group size (see [`~optimum_layerwise.plan.effective_group_size`]); ignored for 8 bits, which
            quanto quantizes per output channel.

    Returns:
        `dict[str, tuple[tuple[int, ...], torch.dtype | None]]`: tensor name to `(shape, dtype)`.
    """
    if bits not in QUANTO_BITS:
        raise ValueError(f"optimum-quanto supports bits {QUANTO_BITS}, got {bits}.")
    if bits == 8:
        return {"weight": ((out_features * in_features,), torch.int8), "weight_scale": ((out_features, 1), None)}
    rows, cols = (out_features * in_features // group_size, group_size) if group_size else (out_features, in_features)
    packed_rows = math.ceil(rows / (8 // bits))
    return {
        "weight": ((packed_rows, cols), torch.uint8),
        "weight_scale": ((rows, 1), None),
        "weight_shift": ((rows, 1), None),
    }


def _qtype(bits: int):
    from optimum.quanto import qint2, qint4, qint8

    return {2: qint2, 4: qint4, 8: qint8}[bits]


def _stored(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`values` rounded to `dtype`, as they will be stored, and back to their own dtype, so that the codes are computed
    with the stored numbers."""
    rounded = as_stored(values, dtype)
    if not torch.isfinite(rounded).all():
        raise ValueError(f"The quantization scales of this weight overflow {dtype}: its values are too large.")
    return rounded


def _weighted_scale_and_shift(
    weight: torch.Tensor,
    bits: int,
    group_size: int | None,
    stored: torch.dtype,
    input_importance: torch.Tensor | None,
    sym: bool = False,
    search: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[`weighted_affine`] on `weight` grouped as optimum-quanto groups it along axis 0 (consecutive input channels of
    one output row), each element weighted by its input channel's importance (uniform when `None`)."""
    width = group_size or weight.shape[1]
    per_channel = torch.ones(weight.shape[1]) if input_importance is None else input_importance.detach()
    if per_channel.shape != (weight.shape[1],):
        raise ValueError(f"input_importance must have shape ({weight.shape[1]},), got {tuple(per_channel.shape)}.")
    importance = per_channel.to(weight.device, torch.float32).expand(weight.shape).reshape(-1, width)
    scale, shift = weighted_affine(weight.float().reshape(-1, width), importance, bits, stored, sym, search)
    return scale.to(weight.dtype), shift.to(weight.dtype)


def _int8_kernel_faults(module: QuantoLinear, input: torch.Tensor) -> bool:
    """Whether optimum-quanto would send this forward to PyTorch's CPU kernel `_weight_int8pack_mm` (8-bit weights,
    bfloat16 input, `in_features` a multiple of 4) with an `in_features` that is not a multiple of 16: that kernel
    reads past its input there and kills the process (PyTorch 2.13 CPU). Sliced layers have such widths."""
    return (
        module.bits == 8
        and input.dtype == torch.bfloat16
        and input.device.type == "cpu"
        and module.in_features % 16 != 0
    )


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor, requires_grad=False)


class QuantoLinear(nn.Linear):
    """A Linear layer whose weight is quantized by optimum-quanto (RTN), stored as plain tensors.

    A `torch.nn.Linear` subclass, so tools that adapt Linears treat it as bitsandbytes' and GPTQModel's layers: PEFT
    wraps it with its plain LoRA `Linear` (from a plain `LoraConfig`, or transformers' `model.add_adapter`). Its
    tensors are the packed ones of the table above (`weight` holds the codes, not an `(out, in)` float matrix), so
    nothing may treat it as a full-precision Linear: `is_packed = True` says so, and
    [`~optimum_layerwise.model.layers.is_float_linear`] checks it. Merging a LoRA adapter into it fails (PEFT adds the
    adapter to the codes): keep the adapter separate.

    Args:
        in_features (`int`), out_features (`int`):
            Shape of the original Linear.
        bits (`int`):
            2, 4 or 8.
        group_size (`int`, *optional*):
            Effective group size for 2/4 bits, `None` for per-channel.
        bias (`bool`, *optional*, defaults to `False`):
            Whether the layer has a bias (kept in full precision).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`):
            Dtype of the bias and of the dequantized weight; scales and shifts are stored in [`scale_dtype`] of it.
        device (`torch.device`, *optional*):
            Where to allocate the (empty) tensors, e.g. `"meta"` before loading a checkpoint.
    """

    is_packed = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int | None = None,
        bias: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        nn.Module.__init__(self)  # not nn.Linear's, which would allocate a float weight
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        self.group_size = None if bits == 8 else group_size
        self.compute_dtype = dtype
        specs = quanto_tensor_specs(out_features, in_features, bits, self.group_size)
        for name, (shape, tensor_dtype) in specs.items():
            tensor_dtype = tensor_dtype or scale_dtype(dtype)
            self.register_parameter(name, _frozen(torch.empty(shape, dtype=tensor_dtype, device=device)))
        self.register_parameter(
            "bias", _frozen(torch.empty(out_features, dtype=dtype, device=device)) if bias else None
        )
        self._cached_weight: tuple[tuple, torch.Tensor] | None = None
        self._is_hf_initialized = True  # as transformers marks its own quantized modules: never re-initialized

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        bits: int,
        group_size: int | None,
        optimizer: str = "max",
        input_importance: torch.Tensor | None = None,
        sym: bool = False,
    ) -> QuantoLinear:
        """Quantize `linear` with optimum-quanto: AbsmaxOptimizer for 8 bits; for 2/4 bits the MaxOptimizer (scale
        and shift from each group's range), the HqqOptimizer (shift refined to minimise the error, data-free) or the
        importance-weighted search of [`~optimum_layerwise.weighted_rounding.weighted_affine`].

        Args:
            linear (`nn.Linear`):
                The full-precision layer; left untouched.
            bits (`int`):
                2, 4 or 8.
            group_size (`int`, *optional*):
                Effective group size for 2/4 bits.
            optimizer (`str`, *optional*, defaults to `"max"`):
                `"max"`, `"hqq"` or `"imatrix"`, for 2/4 bits.
            input_importance (`torch.Tensor`, *optional*):
                `"imatrix"` only: weight of each input channel's rounding error, `(in_features,)`, e.g. the mean
                squared calibration input of the channel; uniform when not given.
            sym (`bool`, *optional*, defaults to `False`):
                2/4 bits: a symmetric grid, `shift = 2**(bits - 1) · scale` (integer zero-point), which
                compressed-tensors and GPT-Q kernels read without loss; with `"max"` (absolute maximum) or `"imatrix"`.

        Returns:
            [`QuantoLinear`] on the same device and dtype as `linear`.
        """
        from optimum.quanto import AbsmaxOptimizer, HqqOptimizer, MaxOptimizer
        from optimum.quanto.tensor.weights import quantize_weight

        weight = linear.weight.detach()
        module = cls(
            linear.in_features,
            linear.out_features,
            bits,
            group_size,
            bias=linear.bias is not None,
            dtype=weight.dtype,
            device="meta",
        )
        qtype, stored = _qtype(bits), module.weight_scale.dtype
        if bits == 8:
            scale = _stored(AbsmaxOptimizer()(weight, qtype=qtype, axis=0), stored)
            qweight = quantize_weight(weight, qtype=qtype, axis=0, scale=scale, optimized=False)
            packed = {"weight": qweight._data.flatten(), "weight_scale": scale}
        else:
            if sym and optimizer == "hqq":
                raise ValueError("optimizer='hqq' refines an affine shift: it has no symmetric form (use sym=False).")
            if optimizer == "imatrix" or sym:
                importance = input_importance if optimizer == "imatrix" else None
                scale, shift = _weighted_scale_and_shift(
                    weight, bits, module.group_size, stored, importance, sym=sym, search=optimizer == "imatrix"
                )
            else:
                affine = HqqOptimizer() if optimizer == "hqq" else MaxOptimizer()
                scale, shift = affine(weight, qtype=qtype, axis=0, group_size=module.group_size)
            scale, shift = _stored(scale, stored), _stored(shift, stored)
            qweight = quantize_weight(
                weight, qtype=qtype, axis=0, scale=scale, shift=shift, group_size=module.group_size, optimized=False
            )
            packed = {"weight": qweight._data._data, "weight_scale": scale, "weight_shift": shift}
        packed = {name: t.to(stored) if t.is_floating_point() else t for name, t in packed.items()}
        for name, tensor in packed.items():
            expected = getattr(module, name)
            if tensor.shape != expected.shape or tensor.dtype != expected.dtype:
                raise RuntimeError(
                    f"optimum-quanto produced {name} {tuple(tensor.shape)} {tensor.dtype}, expected "
                    f"{tuple(expected.shape)} {expected.dtype}: unsupported optimum-quanto version."
                )
            setattr(module, name, _frozen(tensor.contiguous()))
        if linear.bias is not None:
            module.bias = _frozen(linear.bias.detach().clone())
        return module

    def quanto_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight as an optimum-quanto tensor computing in `dtype` (default: the module's), built on this module's
        codes (no copy) and its scales cast to `dtype`; built once and cached while the tensors and `dtype` stay the
        same (same storage and device), so a forward pass costs only quanto's matmul. Not cached while accelerate
        offloads the module (its tensors are read for each forward and dropped after): a cache would keep them.

        On CPU in bf16, int4 weights with group size 128 use quanto's TinyGemm layout: a repacked copy.
        """
        dtype = dtype or self.compute_dtype
        if getattr(getattr(self, "_hf_hook", None), "offload", False):
            self._cached_weight = None
            return self._build_quanto_weight(dtype)
        key = (self.weight.data_ptr(), self.weight.device, self.weight_scale.data_ptr(), dtype)
        if self._cached_weight is None or self._cached_weight[0] != key:
            self._cached_weight = (key, self._build_quanto_weight(dtype))
        return self._cached_weight[1]

    def _build_quanto_weight(self, dtype: torch.dtype) -> torch.Tensor:
        from optimum.quanto.tensor.packed import PackedTensor
        from optimum.quanto.tensor.weights import WeightQBitsTensor, WeightQBytesTensor

        size, stride = (self.out_features, self.in_features), (self.in_features, 1)
        qtype = _qtype(self.bits)
        scale = self.weight_scale.to(dtype)
        if self.bits == 8:
            data = self.weight.view(size)
            return WeightQBytesTensor(qtype, 0, size, stride, data, scale, activation_qtype=None)
        rows = self.weight_scale.shape[0]
        cols = self.group_size or self.in_features
        data = PackedTensor(self.weight, self.bits, (rows, cols), (cols, 1))
        qweight = WeightQBitsTensor(qtype, 0, self.group_size, size, stride, data, scale, self.weight_shift.to(dtype))
        if self.bits == 4 and self.group_size == 128 and dtype == torch.bfloat16:
            return qweight.optimize()
        return qweight

    def dequantized_weight(self) -> torch.Tensor:
        """The weight in the module's dtype, as quanto computes with it."""
        return self.quanto_weight().dequantize()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight = self.quanto_weight(input.dtype)
        if _int8_kernel_faults(self, input):
            weight = weight.dequantize()
        return nn.functional.linear(input, weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"group_size={self.group_size}, bias={self.bias is not None}"
        )
