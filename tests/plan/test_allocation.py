import pytest

from optimum_layerwise import allocate_bits, parse_memory
from optimum_layerwise.plan.allocation import importance_order


GB = 10**9


def test_paper_llama2_70b_example():
    """Paper §3.2: 80 GB available, 80 layers, 4-bit model 42 GB, 8-bit model 84 GB -> 72 layers at 8 bits."""
    num_layers = 80
    sizes = [{8: 84 * GB // num_layers, 4: 42 * GB // num_layers}] * num_layers
    scores = list(range(num_layers))
    plan = allocate_bits(scores, (8, 4), memory_budget="80GB", layer_sizes=sizes)
    assert sum(bits == 8 for bits in plan.values()) == 72
    # the 8 least important layers (lowest scores) are the ones at 4 bits
    assert [index for index, bits in plan.items() if bits == 4] == list(range(8))
    total = sum(sizes[index][bits] for index, bits in plan.items())
    assert total == pytest.approx(79.8 * GB)


def test_target_bits_matches_paper_formula():
    scores = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2]
    plan = allocate_bits(scores, (4, 2), target_bits=3.0)
    assert sorted(index for index, bits in plan.items() if bits == 4) == [0, 2, 4]
    # floor((3.4 - 2) / 2 * 6) = floor(4.2) = 4 layers at 4 bits
    assert sum(b == 4 for b in allocate_bits(scores, (4, 2), target_bits=3.4).values()) == 4
    assert set(allocate_bits(scores, (4, 2), target_bits=4).values()) == {4}
    assert set(allocate_bits(scores, (4, 2), target_bits=2).values()) == {2}


def test_num_low_bit_layers_two_levels():
    plan = allocate_bits([3.0, 1.0, 2.0, 0.0], (8, 4), num_low_bit_layers=2)
    assert plan == {0: 8, 1: 4, 2: 8, 3: 4}


def test_ties_keep_lower_index_more_important():
    assert importance_order([1.0, 1.0, 2.0]) == [2, 0, 1]
    assert allocate_bits([1.0, 1.0, 1.0], (4, 2), num_low_bit_layers=1) == {0: 4, 1: 4, 2: 2}


def test_three_levels_paper_a2_shape():
    scores = [float(s) for s in (5, 0, 3, 1, 4, 2)]
    plan = allocate_bits(scores, (8, 4, 2), num_low_bit_layers=2)
    # x = 1 most important at 8 bits, 2x = 2 least important at 2 bits
    assert plan == {0: 8, 1: 2, 2: 4, 3: 2, 4: 4, 5: 4}


def test_three_levels_budget_fills_middle_before_high():
    scores = [float(s) for s in range(8)]
    plan = allocate_bits(scores, (8, 4, 2), target_bits=3.0)
    assert sorted(plan.values()) == [2, 2, 2, 2, 4, 4, 4, 4]
    assert all(plan[index] == 4 for index in (4, 5, 6, 7))
    plan = allocate_bits(scores, (8, 4, 2), target_bits=5.0)
    assert sorted(plan.values()) == [4] * 6 + [8] * 2
    assert plan[7] == plan[6] == 8


def test_memory_budget_exact_bytes_with_fixed_part():
    sizes = [{4: 100, 2: 60}] * 4
    assert allocate_bits([0, 1, 2, 3], (4, 2), memory_budget=1000 + 320, layer_sizes=sizes, fixed_bytes=1000) == {
        0: 2,
        1: 2,
        2: 4,
        3: 4,
    }


def test_memory_budget_above_all_high_keeps_everything_high():
    sizes = [{4: 100, 2: 60}] * 3
    assert set(allocate_bits([0, 1, 2], (4, 2), memory_budget="1MB", layer_sizes=sizes).values()) == {4}


def test_memory_budget_below_all_low_is_an_error():
    sizes = [{4: 100, 2: 60}] * 3
    with pytest.raises(ValueError, match="memory_budget.*below the smallest model"):
        allocate_bits([0, 1, 2], (4, 2), memory_budget=179, layer_sizes=sizes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bits=(4,), target_bits=4), "two to four"),
        (dict(bits=(8, 4, 3, 2), num_low_bit_layers=1), "two or three levels"),
        (dict(bits=(2, 4), target_bits=3), "strictly decreasing"),
        (dict(bits=(4, 2), target_bits=5), "target_bits"),
        (dict(bits=(4, 2), target_bits=1.5), "target_bits"),
        (dict(bits=(4, 2)), "exactly one"),
        (dict(bits=(4, 2), target_bits=3, num_low_bit_layers=1), "exactly one"),
        (dict(bits=(4, 2), memory_budget="1GB"), "layer_sizes"),
        (dict(bits=(4, 2), num_low_bit_layers=7), "num_low_bit_layers"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        allocate_bits([0.0, 1.0, 2.0], **kwargs)


@pytest.mark.parametrize(
    "value, expected",
    [(1024, 1024), ("6GB", 6 * 10**9), ("500MiB", 500 * 2**20), ("1.5 GiB", int(1.5 * 2**30)), ("42", 42)],
)
def test_parse_memory(value, expected):
    assert parse_memory(value) == expected


@pytest.mark.parametrize("value", ["6 parsecs", "-1GB", 0, "GB", True])
def test_parse_memory_rejects(value):
    with pytest.raises(ValueError, match="memory_budget"):
        parse_memory(value)
