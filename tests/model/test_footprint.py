"""The sizes a quantized model is compared with are the sizes of those models, built and measured."""

import torch
from transformers import AutoModelForCausalLM

import optimum_layerwise  # noqa: F401  (registers "layerwise")
from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.model.footprint import describe_size, reference_nbytes, size_comparisons, tensor_nbytes


def quantized(folder, layer_bits, **kwargs):
    config = LayerwiseQuantizationConfig(bits=(8, 4, 2), layer_bits=layer_bits, group_size=32, **kwargs)
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)


def test_reference_sizes_are_the_sizes_of_those_models(tiny_checkpoint):
    mixed = quantized(tiny_checkpoint, {0: 8, 1: 4, 2: 2, 3: 4})
    unquantized = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    uniform_4bit = quantized(tiny_checkpoint, dict.fromkeys(range(4), 4))

    backend = mixed.config.quantization_config.quantization_backend()
    assert reference_nbytes(mixed, backend) == tensor_nbytes(unquantized)
    assert reference_nbytes(mixed, backend, dtype=torch.bfloat16) == tensor_nbytes(unquantized.to(torch.bfloat16))
    assert reference_nbytes(mixed, backend, 32, bits=4) == tensor_nbytes(uniform_4bit)
    assert reference_nbytes(unquantized, backend) == tensor_nbytes(unquantized)  # nothing packed: nothing to restore


def test_describe_size_states_every_basis(tiny_checkpoint):
    model = quantized(tiny_checkpoint, {0: 8, 1: 8, 2: 4, 3: 4})
    backend = model.config.quantization_config.quantization_backend()
    sizes = size_comparisons(model, backend, 32)
    assert list(sizes) == ["float32", "bfloat16", "uniform 4-bit"]
    assert sizes["float32"] > sizes["bfloat16"] > sizes["uniform 4-bit"]
    line = describe_size(model, backend, 32)
    ratio = tensor_nbytes(model) / sizes["uniform 4-bit"]
    assert line.endswith(f"of bfloat16, {ratio:.1%} of uniform 4-bit)") and ratio > 1
