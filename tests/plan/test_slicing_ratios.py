"""Per-layer slicing ratios from importance (DynamicSlicing's rule) and the widths they round to."""

from __future__ import annotations

import statistics

import pytest

from optimum_layerwise.plan.slicing_ratios import MAX_LAYER_RATIO, dynamic_ratios, layer_width


SCORES = [-0.95, -0.6, -0.7, -0.9, -0.3, -0.85]  # minus the cosine similarities: the fifth layer matters most


def test_the_mean_is_the_target_and_the_most_important_layer_gets_the_base():
    ratios = dynamic_ratios(SCORES, sparsity=0.3, base=0.1)
    assert statistics.fmean(ratios) == pytest.approx(0.3)
    assert ratios[4] == pytest.approx(0.1)
    assert max(ratios) == ratios[0]  # the most redundant layer is sliced most
    order = sorted(range(6), key=lambda i: ratios[i])
    assert order == sorted(range(6), key=lambda i: -SCORES[i])


def test_base_equal_to_the_target_is_constant_slicing():
    assert dynamic_ratios(SCORES, sparsity=0.25, base=0.25) == pytest.approx([0.25] * 6)
    assert dynamic_ratios([1.0] * 4, sparsity=0.2, base=0.0) == [0.2] * 4


def test_ratios_above_the_cap_go_to_the_other_layers():
    scores = [-1.0, 0.0, 0.0, 0.0, -0.1]  # one very redundant layer would take 2.5x the mean
    ratios = dynamic_ratios(scores, sparsity=0.5, base=0.0)
    assert ratios[0] == MAX_LAYER_RATIO and max(ratios) <= MAX_LAYER_RATIO
    assert statistics.fmean(ratios) == pytest.approx(0.5)
    assert ratios[4] > ratios[1] == ratios[2] == ratios[3]


@pytest.mark.parametrize(("base", "sparsity"), [(0.3, 0.2), (-0.1, 0.2), (0.0, 0.95)])
def test_impossible_requests_are_refused(base, sparsity):
    with pytest.raises(ValueError, match="Need 0 <= base <= sparsity"):
        dynamic_ratios(SCORES, sparsity=sparsity, base=base)


def test_widths_round_to_the_multiple_within_bounds():
    assert layer_width(896, 0.25, 8) == 672
    assert layer_width(896, 0.2501, 8) == 672
    assert layer_width(576, 0.0, 8) == 576
    assert layer_width(64, 0.99, 8) == 8
