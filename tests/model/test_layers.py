import pytest
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import build_tiny_model
from optimum_layerwise.model.layers import decoder_layers, decoder_layers_path, linear_modules, set_submodule


def test_finds_decoder_layers_of_every_supported_architecture(arch):
    model = build_tiny_model(arch)
    assert decoder_layers_path(model) == "model.layers"
    assert len(decoder_layers(model)) == model.config.num_hidden_layers


def test_linear_modules_and_skip():
    layer = decoder_layers(build_tiny_model("llama"))[0]
    names = set(linear_modules(layer))
    assert names == {f"self_attn.{p}_proj" for p in "qkvo"} | {f"mlp.{p}_proj" for p in ("gate", "up", "down")}
    assert "mlp.gate_proj" not in linear_modules(layer, skip=["gate_proj"])
    assert "mlp.up_proj" not in linear_modules(layer, skip=["model.layers.0.mlp.up_proj"], prefix="model.layers.0")
    assert "mlp.up_proj" in linear_modules(layer, skip=["model.layers.1.mlp.up_proj"], prefix="model.layers.0")


def test_unsupported_model_gets_a_clear_error():
    model = build_tiny_model("llama")
    model.model.layers = nn.ModuleList(list(model.model.layers)[:-1])  # no list of num_hidden_layers any more
    with pytest.raises(ValueError, match="Cannot find the decoder layers"):
        decoder_layers(model)


def test_other_layer_list_names_are_found():
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    assert decoder_layers_path(model) == "transformer.h"


def test_set_submodule():
    layer = decoder_layers(build_tiny_model("llama"))[0]
    replacement = nn.Identity()
    set_submodule(layer, "mlp.up_proj", replacement)
    assert layer.mlp.up_proj is replacement
