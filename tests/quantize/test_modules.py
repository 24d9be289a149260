"""The packed Linear of the quanto backend (`quantize/modules.py`)."""

from __future__ import annotations

import subprocess
import sys


_FORWARDS = """
import torch
from optimum_layerwise.quantize.modules import QuantoLinear
torch.manual_seed(0)
for width in (8, 24, 520, 528):
    module = QuantoLinear.from_linear(torch.nn.Linear(width, 40), 8, None).to(torch.bfloat16)
    inputs = torch.randn(3, 5, width, dtype=torch.bfloat16)
    weight, bias = module.dequantized_weight().float(), module.bias.float()
    error = (module(inputs).float() - torch.nn.functional.linear(inputs.float(), weight, bias)).abs().max().item()
    assert error < 0.1, (width, error)
    print(width, flush=True)
"""


def test_int8_bfloat16_forward_on_cpu_survives_widths_not_a_multiple_of_16():
    # PyTorch's CPU `_weight_int8pack_mm`, which optimum-quanto picks for int8 weights and bf16 input, reads past
    # its input when in_features is not a multiple of 16 and kills the process (sliced layers have such widths).
    # A subprocess, so that a fault fails this test instead of ending the test run.
    result = subprocess.run([sys.executable, "-c", _FORWARDS], capture_output=True, text=True)
    assert result.returncode == 0, (
        f"return code {result.returncode} after widths {result.stdout.split()}: {result.stderr[-2000:]}"
    )
    assert result.stdout.split() == ["8", "24", "520", "528"]
