import pytest

from optimum_layerwise.plan import average_bits, check_layer_bits, effective_group_size, normalize_layer_bits


@pytest.mark.parametrize(
    "in_features, requested, expected",
    [
        (4096, 128, 128),
        (576, 128, 96),  # SmolLM2 hidden size: 128 does not divide 576, 96 does
        (1536, 128, 128),
        (100, 128, None),  # not wider than one group: per channel
        (160, 128, 32),  # 128, 96 and 64 do not divide 160; 32 does
        (1000, 128, None),  # no multiple of 32 divides 1000: per channel
        (64, 32, 32),
        (4096, None, None),
    ],
)
def test_effective_group_size_follows_quanto_rule(in_features, requested, expected):
    assert effective_group_size(in_features, requested) == expected


def test_effective_group_size_matches_quanto_for_128():
    from optimum.quanto import qint4
    from optimum.quanto.nn import QLinear
    from torch import nn

    for in_features in (64, 160, 576, 960, 1000, 2048):
        qlinear = QLinear.from_module(nn.Linear(in_features, 8), weights=qint4)
        assert qlinear.weight_group_size == effective_group_size(in_features, 128), in_features


def test_normalize_layer_bits_converts_json_keys():
    assert normalize_layer_bits({"1": 2, "0": 4}) == {0: 4, 1: 2}
    assert list(normalize_layer_bits({"10": 2, "2": 4})) == [2, 10]


@pytest.mark.parametrize("bad", [{"a": 4}, {"-1": 4}, {0: 4.5}, {0: True}, [4, 2]])
def test_normalize_layer_bits_rejects_bad_maps(bad):
    with pytest.raises(ValueError, match="layer_bits"):
        normalize_layer_bits(bad)


def test_check_layer_bits_names_the_problem():
    check_layer_bits({0: 4, 1: 2}, 2, (4, 2))
    with pytest.raises(ValueError, match=r"names layers \[5\]"):
        check_layer_bits({0: 4, 1: 2, 5: 2}, 2, (4, 2))
    with pytest.raises(ValueError, match=r"missing layers \[1\]"):
        check_layer_bits({0: 4}, 2, (4, 2))
    with pytest.raises(ValueError, match="not among"):
        check_layer_bits({0: 4, 1: 8}, 2, (4, 2))


def test_average_bits():
    assert average_bits({0: 4, 1: 2, 2: 2, 3: 4}) == 3.0
