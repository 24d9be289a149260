"""The memory model: sizes read on the meta device, the parts of each path's prediction, the choice between them."""

from __future__ import annotations

import pytest
import torch

from conftest import build_tiny_model
from optimum_layerwise.model.footprint import tensor_nbytes
from optimum_layerwise.model.shape import ModelShape
from optimum_layerwise.pipelines.memory_estimate import (
    MARGIN,
    SPREAD,
    check_fits,
    choose_path,
    estimate_memory,
    estimate_scoring_memory,
)
from optimum_layerwise.plan.request import QuantizationRequest
from optimum_layerwise.plan.slicing_request import SlicingRequest


WINDOWS = [[(7 * i + j) % 120 + 4 for j in range(200)] for i in range(6)]


@pytest.fixture(scope="module")
def shape() -> ModelShape:
    return ModelShape.from_model(build_tiny_model())


def test_shape_counts_every_weight_once_tied_or_not():
    model = build_tiny_model()
    shape = ModelShape.from_model(model)
    assert shape.total_bytes == tensor_nbytes(model)
    assert shape.num_layers == 4 and shape.layer_bytes[0] == tensor_nbytes(model.model.layers[0])
    assert ModelShape.from_model(model, torch.bfloat16).total_bytes == tensor_nbytes(model.to(torch.bfloat16))
    tied = build_tiny_model(tie_word_embeddings=True)
    tied.tie_weights()
    assert ModelShape.from_model(tied).total_bytes == tensor_nbytes(tied)
    assert ModelShape.from_config(tied.config, torch.float32).total_bytes == tensor_nbytes(tied)


def test_layer_by_layer_holds_two_layers_instead_of_all(shape):
    request = QuantizationRequest(bits=(4, 2), target_bits=3.0, dataset=WINDOWS, seq_len=48, num_samples=4)
    in_memory = estimate_memory(shape, request)
    streamed = estimate_memory(shape, request, low_memory=True)
    assert in_memory.parts["weights"] == shape.total_bytes
    assert streamed.parts["weights"] == shape.other_bytes + 2 * shape.largest_layer_bytes
    assert streamed.parts["working set"] == in_memory.parts["working set"]
    assert (in_memory.path, streamed.path) == ("in memory", "layer by layer")
    converted = estimate_memory(shape, request, checkpoint_bytes=shape.total_bytes // 2)
    assert converted.peak_bytes - in_memory.peak_bytes == pytest.approx(shape.total_bytes // 2, abs=1 << 20)


def test_working_set_grows_with_the_calibration_and_with_gptq(shape):
    small = QuantizationRequest(
        bits=(4, 2), target_bits=3.0, dataset=WINDOWS, seq_len=48, num_samples=4, importance="lim"
    )
    large = QuantizationRequest(
        bits=(4, 2), target_bits=3.0, dataset=WINDOWS, seq_len=96, num_samples=64, importance="lim"
    )
    gptq = QuantizationRequest(
        bits=(4, 2), target_bits=3.0, dataset=WINDOWS, seq_len=96, num_samples=64, backend="gptq"
    )
    no_data = QuantizationRequest(bits=(4, 2), target_bits=3.0, importance="zd")
    working = {
        name: estimate_memory(shape, request).parts["working set"]
        for name, request in dict(small=small, large=large, gptq=gptq, no_data=no_data).items()
    }
    assert working["no_data"] < working["small"] < working["large"] < working["gptq"]


def test_the_path_that_fits_is_chosen_and_says_why(shape):
    request = QuantizationRequest(bits=(4, 2), target_bits=3.0, dataset=WINDOWS, seq_len=48, num_samples=4)
    in_memory = estimate_memory(shape, request).peak_bytes
    streamed = estimate_memory(shape, request, low_memory=True).peak_bytes
    roomy = choose_path(shape, request, limit=2 * in_memory)
    assert not roomy.low_memory and "fits" in roomy.reason and len(roomy.estimates) == 2
    tight = choose_path(shape, request, limit=int(streamed * MARGIN) + (in_memory - streamed) // 2)
    assert tight.low_memory and tight.summary().startswith("quantize layer by layer: ")
    assert not choose_path(shape, request, requested=False, limit=None).low_memory  # unknown memory: as asked
    with pytest.raises(MemoryError, match=r"Not enough memory: quantize layer by layer: .* may use 1\.0 MiB"):
        choose_path(shape, request, limit=1 << 20)
    with pytest.raises(MemoryError, match="quantize in memory"):  # the user's choice is checked, not replaced
        choose_path(shape, request, requested=False, limit=int(streamed * MARGIN) + 1)


def test_slicing_has_no_layer_by_layer_path(shape):
    slicing = SlicingRequest(sparsity=0.2, dataset=WINDOWS, seq_len=48, num_samples=4)
    choice = choose_path(shape, slicing, limit=1 << 40)
    assert not choice.low_memory and [e.job for e in choice.estimates] == ["slice"]
    with pytest.raises(MemoryError, match="Not enough memory: slice in memory"):
        choose_path(shape, slicing, limit=1 << 20)
    both = QuantizationRequest(
        bits=(8, 4), target_bits=6.0, dataset=WINDOWS, seq_len=48, num_samples=4, slicing=slicing
    )
    assert [e.job for e in choose_path(shape, both, limit=1 << 40).estimates] == ["slice+quantize"]


def test_scoring_holds_the_model_and_its_scoring_phase(shape):
    lim = estimate_scoring_memory(
        shape, QuantizationRequest(importance="lim", dataset=WINDOWS, seq_len=48, num_samples=4)
    )
    zd = estimate_scoring_memory(shape, QuantizationRequest(importance="zd"))
    assert (lim.job, lim.path, lim.parts["weights"]) == ("score", "in memory", shape.total_bytes)
    assert zd.parts["working set"] == int(2 * shape.largest_layer_bytes * SPREAD)  # ZD's float64 copy of one layer
    assert lim.parts["working set"] > zd.parts["working set"]
    assert check_fits(lim, limit=1 << 40).summary().startswith("score in memory: ")
    with pytest.raises(MemoryError, match=r"^Not enough memory: score in memory: .* may use 1\.0 MiB\.$"):
        check_fits(lim, limit=1 << 20)
