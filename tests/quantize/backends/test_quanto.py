import math

import pytest
import torch
from torch import nn

from optimum_layerwise.plan import effective_group_size
from optimum_layerwise.quantize.backends import get_backend
from optimum_layerwise.quantize.modules import QuantoLinear


BACKEND = get_backend("quanto")


def buffer_bytes(module: QuantoLinear) -> int:
    return sum(
        getattr(module, name).numel() * getattr(module, name).element_size()
        for name in ("weight", "weight_scale", "weight_shift")
        if getattr(module, name, None) is not None
    )


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("in_features, group_size", [(256, 128), (160, 128), (96, 128), (576, 32)])
def test_packed_module_matches_its_spec_and_byte_count(bits, in_features, group_size):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, 48, bias=True)
    group = effective_group_size(in_features, group_size)
    module = BACKEND.quantize_linear(linear, bits, group)
    for name, (shape, dtype) in BACKEND.tensor_specs(48, in_features, bits, group).items():
        assert tuple(getattr(module, name).shape) == shape
        assert getattr(module, name).dtype == (dtype or torch.float16)  # 16-bit scales for a float32 model
    assert buffer_bytes(module) == BACKEND.linear_nbytes(48, in_features, bits, group, torch.float32)
    assert torch.equal(module.bias, linear.bias)
    x = torch.randn(3, 5, in_features)
    expected = nn.functional.linear(x, module.dequantized_weight(), linear.bias)
    assert torch.allclose(module(x), expected, atol=1e-5)
    error = (module.dequantized_weight() - linear.weight).abs().mean() / linear.weight.abs().mean()
    assert error < {8: 0.01, 4: 0.2, 2: 0.7}[bits]


@pytest.mark.parametrize("qtype_name, bits", [("qint2", 2), ("qint4", 4), ("qint8", 8)])
def test_same_weights_as_quanto_qlinear(qtype_name, bits):
    """Our packed module stores exactly what optimum-quanto's own QLinear computes (quanto uses group 128) for a bf16
    model, whose scales both keep in bf16."""
    from optimum import quanto

    torch.manual_seed(0)
    linear = nn.Linear(384, 32).to(torch.bfloat16)
    qlinear = quanto.nn.QLinear.from_module(linear, weights=getattr(quanto, qtype_name))
    qlinear.freeze()
    module = BACKEND.quantize_linear(linear, bits, effective_group_size(384, 128))
    assert torch.equal(module.dequantized_weight(), qlinear.weight.dequantize())
    x = torch.randn(4, 384, dtype=torch.bfloat16)
    assert torch.equal(module(x), qlinear(x))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_float16_scales_of_a_float32_model_are_the_ones_the_codes_use(bits):
    torch.manual_seed(0)
    linear = nn.Linear(384, 64)
    module = BACKEND.quantize_linear(linear, bits, None if bits == 8 else 128)
    assert module.weight_scale.dtype == torch.float16 and module.dequantized_weight().dtype == torch.float32
    codes = module.quanto_weight()._data
    codes = codes.unpack() if hasattr(codes, "unpack") else codes  # 2/4-bit codes are packed in bytes
    scale = module.weight_scale.float()
    if bits == 8:
        rebuilt = codes.float() * scale
    else:
        rebuilt = (codes.float() * scale - module.weight_shift.float()).reshape(64, 384)
    assert torch.equal(module.dequantized_weight(), rebuilt)  # what is stored is what is computed with
    error = (module.dequantized_weight() - linear.weight).pow(2).mean().sqrt()
    step = (linear.weight.max() - linear.weight.min()) / (2**bits - 1)
    assert error < 0.35 * step  # round-to-nearest on the grid of the stored scales: about step / sqrt(12)


def test_per_byte_cost_shrinks_with_bits():
    per_param = {b: BACKEND.linear_nbytes(2048, 2048, b, 128, torch.bfloat16) / 2048**2 for b in (8, 4, 2)}
    assert per_param[8] == pytest.approx(1.0, abs=0.01)
    assert per_param[4] == pytest.approx(0.5 + 4 / 128, abs=1e-9)  # packed nibbles + bf16 scale and shift per 128
    assert per_param[2] == pytest.approx(0.25 + 4 / 128, abs=1e-9)
    float32 = BACKEND.linear_nbytes(2048, 2048, 4, 128, torch.float32) / 2048**2
    assert float32 == pytest.approx(0.5 + 4 / 128, abs=1e-9)  # a float32 model's scales are float16 too


def test_bf16_int4_uses_tinygemm_once_and_caches_it():
    torch.manual_seed(0)
    linear = nn.Linear(256, 256).to(torch.bfloat16)
    module = BACKEND.quantize_linear(linear, 4, 128)
    x = torch.randn(2, 256, dtype=torch.bfloat16)
    first = module(x)
    cached = module.quanto_weight()
    assert type(cached).__name__ == "TinyGemmWeightQBitsTensor"
    assert torch.equal(module(x), first) and module.quanto_weight() is cached
    reference = nn.functional.linear(x.float(), module.dequantized_weight().float(), linear.bias.float())
    assert torch.allclose(first.float(), reference, atol=0.05, rtol=0.02)


def test_the_quanto_tensor_is_built_once_and_rebuilt_when_the_tensors_move():
    module = BACKEND.quantize_linear(nn.Linear(64, 32), 2, 32)
    built = module.quanto_weight()
    assert module.quanto_weight() is built
    module.weight = nn.Parameter(module.weight.clone(), requires_grad=False)  # as loading or `.to()` does
    rebuilt = module.quanto_weight()
    assert rebuilt is not built and torch.equal(rebuilt.dequantize(), built.dequantize())


def test_empty_module_is_on_meta():
    module = BACKEND.empty_linear(64, 32, 4, 32, True, torch.bfloat16)
    assert module.weight.is_meta and module.weight.dtype == torch.uint8
    assert module.weight_scale.dtype == torch.bfloat16
    assert math.prod(module.weight.shape) == 64 * 32 // 2


def test_unsupported_bits():
    with pytest.raises(ValueError, match="supports bits"):
        BACKEND.quantize_linear(nn.Linear(64, 8), 3, 32)


def test_backend_registry():
    with pytest.raises(ValueError, match="`backend` must be one of"):
        get_backend("awq")
    assert get_backend("gptq", sym=False).sym is False


def test_missing_library_names_the_install_command(monkeypatch):
    backend = get_backend("gptq")
    monkeypatch.setattr(type(backend), "is_available", lambda self: False)
    with pytest.raises(ImportError, match=r"backend='gptq' needs gptqmodel>=7.7.*`pip install gptqmodel>=7.7`"):
        backend.require()


@pytest.mark.parametrize("bits, gain", [(2, 0.9), (4, 0.98)])
def test_hqq_optimizer_rounds_with_less_error(bits, gain):
    torch.manual_seed(0)
    linear = nn.Linear(512, 256)
    with torch.no_grad():  # heavy-tailed, as trained weights are (the range then wastes levels)
        linear.weight.copy_(torch.distributions.StudentT(3.0).sample(linear.weight.shape) * 0.02)
    errors = {}
    for optimizer in ("max", "hqq"):
        module = get_backend("quanto", optimizer=optimizer).quantize_linear(linear, bits, 128)
        errors[optimizer] = (module.dequantized_weight() - linear.weight).abs().mean().item()
    assert errors["hqq"] < gain * errors["max"]


@pytest.mark.parametrize("bits", [2, 4])
def test_imatrix_calibrator_weighs_the_rounding_error_by_the_inputs(bits):
    """Inputs with a few large channels (as LLM activations have): weighting each channel's rounding error by its mean
    squared input gives a smaller output error than the range, HQQ, or the same search without the inputs."""
    torch.manual_seed(0)
    linear = nn.Linear(256, 128)
    with torch.no_grad():
        linear.weight.copy_(torch.distributions.StudentT(3.0).sample(linear.weight.shape) * 0.02)
    inputs = torch.randn(512, 256)
    inputs[:, ::37] *= 30.0
    reference = linear(inputs)
    backend = get_backend("quanto", optimizer="imatrix")
    assert backend.requires_calibration and not get_backend("quanto").requires_calibration
    calibrator = backend.calibrator(linear, bits, 64)
    for chunk in inputs.split(100):
        calibrator.add_batch(chunk)
    errors = {"imatrix": calibrator.finish(), "no inputs": backend.quantize_linear(linear, bits, 64)}
    for name in ("max", "hqq"):
        errors[name] = get_backend("quanto", optimizer=name).quantize_linear(linear, bits, 64)
    errors = {name: (module(inputs) - reference).pow(2).mean().item() for name, module in errors.items()}
    assert errors["imatrix"] < 0.8 * min(errors["max"], errors["hqq"], errors["no inputs"]), errors


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"optimizer": "awq"}, r"`optimizer` must be one of \('max', 'hqq', 'imatrix'\)"),
        ({"optimizer": "hqq", "backend": "gptq"}, "`optimizer` is an optimum-quanto option"),
    ],
)
def test_optimizer_is_checked(arguments, message):
    from optimum_layerwise import LayerwiseQuantizationConfig

    with pytest.raises(ValueError, match=message):
        LayerwiseQuantizationConfig(bits=(4, 2), **arguments)


def test_imatrix_without_data_is_refused_before_quantizing():
    from optimum_layerwise import LayerwiseQuantizationConfig

    config = LayerwiseQuantizationConfig(bits=(4, 2), optimizer="imatrix", importance="zd", target_bits=3.0)
    message = r"backend='quanto' with optimizer='imatrix' quantizes each layer from calibration data: pass `dataset`"
    with pytest.raises(ValueError, match=message):
        config.check_quantizable()


def test_the_optimizer_defaults_to_imatrix_with_data_and_to_the_range_without():
    from optimum_layerwise import LayerwiseQuantizationConfig

    assert LayerwiseQuantizationConfig(dataset="shakespeare").optimizer == "imatrix"
    assert LayerwiseQuantizationConfig(importance="zd", target_bits=6.0).optimizer == "max"
    assert LayerwiseQuantizationConfig(backend="gptq", dataset="shakespeare").optimizer == "max"
    saved = LayerwiseQuantizationConfig(dataset="shakespeare").to_dict()
    del saved["optimizer"]  # written by a version before the option: made with the range
    assert LayerwiseQuantizationConfig.from_dict(saved).optimizer == "max"
