import pytest

from conftest import build_tiny_model
from optimum_layerwise import IMPORTANCE_METHODS, compute_importance
from optimum_layerwise.importance.baselines import depth_scores, random_scores


def test_random_is_a_seeded_permutation():
    assert sorted(random_scores(10, seed=1)) == list(range(10))
    assert random_scores(10, seed=1) == random_scores(10, seed=1)
    assert random_scores(10, seed=1) != random_scores(10, seed=2)


def test_depth_keeps_the_last_layer_and_drops_from_the_top():
    scores = depth_scores(5)
    order = sorted(range(5), key=lambda i: -scores[i])
    assert order == [4, 0, 1, 2, 3]


def test_explicit_scores_are_checked_against_the_model():
    model = build_tiny_model("llama")
    assert compute_importance(model, [1, 2, 3, 4]) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="has 3 scores but the model has 4"):
        compute_importance(model, [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "method, message", [("lmi", "must be one of"), ([], "non-empty"), ([1.0, float("nan")], "finite")]
)
def test_bad_methods(method, message):
    with pytest.raises(ValueError, match=message):
        compute_importance(build_tiny_model("llama"), method)


def test_data_methods_need_data():
    with pytest.raises(ValueError, match="needs calibration data"):
        compute_importance(build_tiny_model("llama"), "lim")


def test_every_registered_method_scores_every_layer(token_batches):
    model = build_tiny_model("qwen2")
    for name in IMPORTANCE_METHODS:
        assert len(compute_importance(model, name, token_batches)) == 4, name
