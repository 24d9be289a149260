"""The packed Linear of the quanto backend (`quantize/modules.py`)."""

from __future__ import annotations

import subprocess
import sys

import pytest


_FORWARD = """
import sys, torch
from optimum_layerwise.quantize.modules import QuantoLinear
torch.manual_seed(0)
linear = torch.nn.Linear({width}, 40, bias=True)
module = QuantoLinear.from_linear(linear, 8, None).to(torch.bfloat16)
inputs = torch.randn(3, 5, {width}, dtype=torch.bfloat16)
expected = torch.nn.functional.linear(inputs.float(), module.dequantized_weight().float(), module.bias.float())
error = (module(inputs).float() - expected).abs().max().item()
print(error)
sys.exit(0 if error < 0.1 else 1)
"""


@pytest.mark.parametrize("width", [8, 24, 520, 528])
def test_int8_bfloat16_forward_on_cpu_survives_widths_not_a_multiple_of_16(width):
    # PyTorch's CPU `_weight_int8pack_mm`, which optimum-quanto picks for int8 weights and bf16 input, reads past
    # its input when in_features is not a multiple of 16 and kills the process (sliced layers have such widths).
    # A subprocess, so that a fault fails this test instead of ending the test run.
    result = subprocess.run([sys.executable, "-c", _FORWARD.format(width=width)], capture_output=True, text=True)
    assert result.returncode == 0, f"return code {result.returncode}: {result.stdout}{result.stderr[-2000:]}"
