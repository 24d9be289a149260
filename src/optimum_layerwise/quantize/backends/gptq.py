"""GPT-Q through GPTQModel: its GPTQ algorithm and its `TorchLinear` packed module, in the standard GPTQ layout.

The algorithm is gptqmodel's `GPTQ` (Hessian from the calibration inputs of each Linear, then column-wise
quantization with error feedback), the same object optimum's `GPTQQuantizer` drives. Packed weights are gptqmodel's
`TorchLinear` (runs on any device, 16-bit activations). In memory they hold GPTQModel's internal "v2" zero-points;
checkpoints hold the standard "v1" layout (`checkpoint_format="gptq"`) that GPTQModel, vLLM and SGLang read.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import re

import torch
from torch import nn

from ...plan.quantization_plan import QuantizationPlan
from .base import QuantizationBackend


PACK_BITS = 32  # GPT-Q packs into int32 words


def gptq_dynamic(plan: QuantizationPlan, base_bits: int) -> dict[str, dict[str, int]]:
    """GPTQModel's `dynamic` overrides for a plan: per bit width other than `base_bits`, one positive regex over the
    modules at that width, naming a whole decoder layer when all its modules have it, else each module, e.g.
    `{"+:^model\\.layers\\.(3\\..*|5\\.self_attn\\.q_proj)$": {"bits": 2}}`."""
    prefix = f"{plan.layers_path}."
    layers: dict[int, dict[str, int]] = {}
    for name, module in plan.modules.items():
        index, _, relative = name.removeprefix(prefix).partition(".")
        layers.setdefault(int(index), {})[relative] = module.bits
    alternatives: dict[int, list[str]] = {}
    for index, modules in sorted(layers.items()):
        widths = set(modules.values())
        if len(widths) == 1:
            alternatives.setdefault(widths.pop(), []).append(f"{index}\\..*")
            continue
        for relative, bits in modules.items():
            alternatives.setdefault(bits, []).append(f"{index}\\.{re.escape(relative)}")
    escaped = re.escape(plan.layers_path)
    return {
        f"+:^{escaped}\\.({'|'.join(names)})$": {"bits": bits}
        for bits, names in sorted(alternatives.items(), reverse=True)
        if bits != base_bits
    }


def gptq_group_size(group_size: int | None) -> int:
    """GPT-Q's spelling of a group size (in its config and its quantizer): `-1` for one group per output channel."""
    return -1 if group_size is None else group_size


def _group(in_features: int, group_size: int | None) -> int:
    return in_features if group_size is None else group_size


class GptqCalibrator:
    """Accumulates the Hessian of one Linear from its calibration inputs, then quantizes it with GPT-Q.

    Args:
        linear (`nn.Linear`):
            The full-precision Linear. `finish` overwrites its weight with the quantized values.
        bits (`int`), group_size (`int`, *optional*), sym (`bool`), desc_act (`bool`), damp_percent (`float`):
            GPT-Q settings (`group_size=None`: one group per output channel).
    """

    def __init__(
        self, linear: nn.Linear, bits: int, group_size: int | None, sym: bool, desc_act: bool, damp_percent: float
    ):
        from gptqmodel import QuantizeConfig
        from gptqmodel.quantization.gptq import GPTQ

        self.linear = linear
        self.bits, self.group_size, self.sym, self.desc_act = bits, group_size, sym, desc_act
        self.damp_percent = damp_percent
        settings = QuantizeConfig(
            bits=bits,
            group_size=gptq_group_size(group_size),
            sym=sym,
            desc_act=desc_act,
            offload_to_disk=False,  # with the default disk offload, every config makes a folder that nothing uses
            act_group_aware=group_size is not None,  # gptqmodel's group-aware reordering needs groups
        )
        self.gptq = GPTQ(linear, qcfg=settings)
        self.gptq.quantizer.configure(bits=bits, sym=sym, perchannel=True)

    def add_batch(self, inputs: torch.Tensor) -> None:
        """Add calibration inputs of shape `(tokens, in_features)` to the Hessian."""
        self.gptq.add_batch(inputs, None)

    def finish(self) -> nn.Module:
        """Run GPT-Q (round-to-nearest on GPT-Q's grid when no input was added) and return the packed module."""
        results = self.gptq.fasterquant(
            percdamp=self.damp_percent, group_size=gptq_group_size(self.group_size), actorder=self.desc_act
        )
        scale, zero, g_idx = results[:3]
        self.gptq.free()
        linear = self.linear
        device = linear.weight.device
        packed = _torch_linear(
            linear.in_features,
            linear.out_features,
            self.bits,
            self.group_size,
            self.sym,
            self.desc_act,
            linear.bias is not None,
        )
        packed.pack(linear.to("cpu"), scale.cpu(), zero.cpu(), g_idx.cpu())  # gptqmodel packs on the CPU
        packed.to(device)
        _ready(packed)
        return packed


def _torch_linear(
    in_features: int, out_features: int, bits: int, group_size: int | None, sym: bool, desc_act: bool, bias: bool
) -> nn.Module:
    """An empty gptqmodel `TorchLinear`."""
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    return TorchLinear(
        bits=bits,
        group_size=_group(in_features, group_size),
        sym=sym,
        desc_act=desc_act,
        in_features=in_features,
        out_features=out_features,
        bias=bias,
    )


def _ready(module: nn.Module) -> None:
    """Finish a packed module for inference without gptqmodel's `torch.compile` step (slow to warm up on CPU and
    not needed for correctness): the eager dequantize path is used."""
    module.optimized = True
    module.post_init()


class GptqBackend(QuantizationBackend):
    """GPT-Q (GPTQModel): 2, 3, 4 and 8 bits, calibrated layer by layer."""

    name = "gptq"
    requirement = "gptqmodel>=7.7"
    requires_calibration = True

    def __init__(self, sym: bool = True, desc_act: bool = False, damp_percent: float = 0.01):
        self.sym, self.desc_act, self.damp_percent = sym, desc_act, damp_percent

    def is_available(self) -> bool:
        return importlib.util.find_spec("gptqmodel") is not None

    def layer_group_size(self, in_features: int, group_size: int | None) -> int | None:
        """GPT-Q keeps one group size for every layer; a last, shorter group covers any remainder."""
        return None if group_size is None or group_size >= in_features else group_size

    def level_settings(self, bits: int, group_size: int | None) -> dict:
        return {"sym": self.sym, "group_size": group_size}

    def tensor_specs(
        self, out_features: int, in_features: int, bits: int, group_size: int | None
    ) -> dict[str, tuple[tuple[int, ...], torch.dtype | None]]:
        groups = math.ceil(in_features / _group(in_features, group_size))
        return {
            "qweight": ((math.ceil(in_features * bits / PACK_BITS), out_features), torch.int32),
            "qzeros": ((groups, math.ceil(out_features * bits / PACK_BITS)), torch.int32),
            "scales": ((groups, out_features), torch.float16),
            "g_idx": ((in_features,), torch.int32),
        }

    def calibrator(self, linear: nn.Linear, bits: int, group_size: int | None) -> GptqCalibrator:
        """A GPT-Q accumulator for `linear`: feed it calibration inputs, then `finish()` returns the packed module."""
        return GptqCalibrator(linear, bits, group_size, self.sym, self.desc_act, self.damp_percent)

    def quantize_linear(self, linear: nn.Linear, bits: int, group_size: int | None) -> nn.Module:
        """Without calibration inputs GPT-Q reduces to round-to-nearest on its grid (used to measure sensitivity)."""
        return self.calibrator(copy.deepcopy(linear), bits, group_size).finish()

    def empty_linear(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int | None,
        bias: bool,
        dtype: torch.dtype,
    ) -> nn.Module:
        return _torch_linear(in_features, out_features, bits, group_size, self.sym, self.desc_act, bias)

    def is_packed(self, module: nn.Module) -> bool:
        from gptqmodel.nn_modules.qlinear.torch import TorchLinear

        return isinstance(module, TorchLinear)

    def dequantized_weight(self, module: nn.Module) -> torch.Tensor:
        return module.dequantize_weight().T

    def dynamic_overrides(self, plan: QuantizationPlan, base_bits: int) -> dict[str, dict[str, int]]:
        """GPTQModel's `dynamic` entries (see [`gptq_dynamic`]), which GPTQModel, vLLM and SGLang read."""
        return gptq_dynamic(plan, base_bits)

    def finish_loading(self, module: nn.Module) -> None:
        """Convert freshly loaded standard ("v1") zero-points to gptqmodel's in-memory layout and initialise."""
        from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module

        convert_gptq_v1_to_v2_format_module(module, module.bits, module.pack_dtype)
        _ready(module)

    def checkpoint_tensors(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """`qzeros` in the standard checkpoint layout ("v1"); the module itself is left unchanged."""
        from gptqmodel.quantization import QuantizeConfig
        from gptqmodel.utils.model import convert_gptq_v2_to_v1_format_module

        view = copy.copy(module)
        view._buffers = {**module._buffers, "qzeros": module.qzeros.clone()}
        convert_gptq_v2_to_v1_format_module(view, QuantizeConfig(bits=module.bits, offload_to_disk=False))
        return {"qzeros": view.qzeros}
