import pytest
import torch

from optimum_layerwise.quantize.weighted_rounding import weighted_affine


def rounded(grouped, scale, shift, bits):
    codes = torch.clamp(torch.round((grouped + shift) / scale), 0, 2**bits - 1)
    return codes * scale - shift


def weighted_error(grouped, importance, scale, shift, bits):
    return (importance * (grouped - rounded(grouped, scale, shift, bits)) ** 2).sum(dim=1)


def heavy_tailed(groups: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.distributions.StudentT(3.0).sample((groups, size)) * 0.02 + 0.001 * torch.randn(
        groups, size, generator=generator
    )


@pytest.mark.parametrize("bits", [2, 4])
def test_every_group_rounds_no_worse_than_its_range_and_better_overall(bits):
    torch.manual_seed(0)
    grouped = heavy_tailed(256, 64)
    importance = torch.rand(1, 64).expand_as(grouped) ** 4  # a few channels matter much more than the rest
    scale, shift = weighted_affine(grouped, importance, bits, torch.float16)
    low, high = grouped.amin(1, keepdim=True), grouped.amax(1, keepdim=True)
    range_scale = ((high - low) / (2**bits - 1)).half().float()
    range_shift = (-low).half().float()
    ours = weighted_error(grouped, importance, scale, shift, bits)
    by_range = weighted_error(grouped, importance, range_scale, range_shift, bits)
    assert bool((ours <= by_range * (1 + 1e-6)).all())
    assert ours.sum() < 0.8 * by_range.sum()


def test_scales_and_shifts_are_exactly_what_is_stored():
    grouped = heavy_tailed(32, 128)
    for dtype in (torch.float16, torch.bfloat16):
        scale, shift = weighted_affine(grouped, torch.ones_like(grouped), 4, dtype)
        assert scale.shape == shift.shape == (32, 1) and bool((scale > 0).all())
        assert torch.equal(scale.to(dtype).float(), scale) and torch.equal(shift.to(dtype).float(), shift)


def test_an_important_channel_is_rounded_more_closely():
    torch.manual_seed(1)
    grouped = heavy_tailed(512, 32, seed=1)
    uniform = torch.ones_like(grouped)
    focused = uniform.clone()
    focused[:, 3] = 1000.0
    errors = {}
    for name, importance in {"uniform": uniform, "focused": focused}.items():
        scale, shift = weighted_affine(grouped, importance, 2, torch.float16)
        errors[name] = ((grouped - rounded(grouped, scale, shift, 2))[:, 3] ** 2).mean()
    assert errors["focused"] < 0.5 * errors["uniform"]


def test_constant_groups_and_unused_channels_stay_finite():
    grouped = torch.cat([torch.full((2, 16), 0.25), torch.zeros(2, 16), heavy_tailed(2, 16)])
    importance = torch.cat([torch.zeros(4, 16), torch.ones(2, 16)])  # channels no calibration input reached
    scale, shift = weighted_affine(grouped, importance, 4, torch.float16)
    restored = rounded(grouped, scale, shift, 4)
    assert bool(torch.isfinite(restored).all())
    assert torch.allclose(restored[:4], grouped[:4], atol=1e-3)


@pytest.mark.parametrize("bits", [2, 4])
def test_symmetric_grids_have_integer_zero_points_and_beat_plain_absmax(bits):
    torch.manual_seed(0)
    grouped = heavy_tailed(256, 64)
    importance = torch.rand(1, 64).expand_as(grouped) ** 4
    half = 2 ** (bits - 1)
    plain_scale, plain_shift = weighted_affine(grouped, importance, bits, torch.float16, sym=True, search=False)
    assert torch.equal(plain_scale, (grouped.abs().amax(1, keepdim=True) / ((2**bits - 1) / 2)).half().float())
    scale, shift = weighted_affine(grouped, importance, bits, torch.float16, sym=True)
    for s, z in ((plain_scale, plain_shift), (scale, shift)):
        assert torch.equal(z, s * half)  # dequantized = (codes - half) · scale: signed codes, no zero-point
        assert torch.equal(z.half().float(), z)
    ours = weighted_error(grouped, importance, scale, shift, bits)
    plain = weighted_error(grouped, importance, plain_scale, plain_shift, bits)
    assert bool((ours <= plain * (1 + 1e-6)).all()) and ours.sum() < 0.8 * plain.sum()
