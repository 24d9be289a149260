"""Exports that stock tools open without `import optimum_layerwise`: each is loaded in a fresh process that never
imports the plugin."""

import json
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from conftest import save_layerwise
from optimum_layerwise.cli import main
from optimum_layerwise.formats.export import export_checkpoint


LAYER_BITS = {0: 8, 1: 4, 2: 2, 3: 4}
TOKENS = [[5, 17, 33, 2, 90, 41, 7, 64, 12, 99, 3, 71], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]

STOCK_LOAD = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
with torch.no_grad():
    logits = model(torch.tensor({tokens})).logits
assert "optimum_layerwise" not in sys.modules, "the stock loader imported the plugin"
torch.save(logits, sys.argv[2])
print(type(model.model.layers[1].self_attn.q_proj).__name__)
"""


def _quantized(folder, tmp_path, **overrides):
    model = save_layerwise(
        folder, tmp_path / "layerwise", bits=(8, 4, 2), layer_bits=LAYER_BITS, group_size=32, **overrides
    )
    return model, tmp_path / "layerwise"


def _stock_logits(folder, tmp_path) -> torch.Tensor:
    """Logits of the checkpoint in `folder` loaded by stock transformers in a fresh process."""
    code = STOCK_LOAD.format(tokens=TOKENS)
    result = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(tmp_path / "logits.pt")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "Linear"  # decompressed to a dense Linear on CPU
    return torch.load(tmp_path / "logits.pt")


@pytest.mark.heavy
def test_compressed_tensors_export_opens_in_stock_transformers_with_the_same_logits(tiny_checkpoint, tmp_path):
    model, saved = _quantized(tiny_checkpoint, tmp_path, sym=True)
    with torch.no_grad():
        ours = model(torch.tensor(TOKENS)).logits
    out = export_checkpoint(saved, tmp_path / "ct", format="compressed-tensors")

    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    assert config["ignore"] == ["lm_head"]
    groups = {group["weights"]["num_bits"]: group for group in config["config_groups"].values()}
    assert sorted(groups) == [2, 4, 8]  # one group per (bits, group size)
    assert groups[8]["weights"]["strategy"] == "channel" and groups[8]["weights"]["symmetric"]
    assert groups[4]["weights"]["group_size"] == 32 and groups[4]["weights"]["symmetric"]
    assert r"re:^model\.layers\.0\.mlp\.down_proj$" in groups[8]["targets"]
    assert r"re:^model\.layers\.2\.mlp\.down_proj$" in groups[2]["targets"]
    assert len(groups[4]["targets"]) == 2 * 7
    assert sum(len(group["targets"]) for group in groups.values()) == 4 * 7
    assert (out / "tokenizer.json").is_file()  # the tokenizer travels with the weights
    card = ModelCard.load(out / "README.md")
    assert {"compressed-tensors", "optimum-layerwise", "8-bit", "4-bit", "2-bit"} <= set(card.data.tags)
    assert "| 2 | 2 |" in card.text and "without optimum-layerwise" in card.text

    stock = _stock_logits(out, tmp_path)
    torch.testing.assert_close(stock, ours, rtol=0, atol=1e-5)


def test_save_pretrained_writes_the_export_and_leaves_the_model_usable(tiny_checkpoint, tmp_path):
    model, _ = _quantized(tiny_checkpoint, tmp_path, sym=True)
    with torch.no_grad():
        before = model(torch.tensor(TOKENS)).logits
    model.save_pretrained(tmp_path / "ct", format="compressed-tensors")
    with torch.no_grad():
        torch.testing.assert_close(model(torch.tensor(TOKENS)).logits, before, rtol=0, atol=0)
    assert json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]["quant_method"] == (
        "compressed-tensors"
    )
    with pytest.raises(ValueError, match="`format` must be 'layerwise' or one of"):
        model.save_pretrained(tmp_path / "other", format="gguf2")
    with pytest.raises(ValueError, match="takes only the destination"):
        model.save_pretrained(tmp_path / "other", format="compressed-tensors", push_to_hub=True)
    assert not (tmp_path / "other").exists()


def test_affine_grids_are_refused_rather_than_changed(tiny_checkpoint, tmp_path):
    _, saved = _quantized(tiny_checkpoint, tmp_path)  # quanto's default: affine int2/int4
    with pytest.raises(ValueError, match=r"affine int4 grids .* Quantize with `sym=True`"):
        export_checkpoint(saved, tmp_path / "ct", format="compressed-tensors")
    assert not (tmp_path / "ct").exists()


def test_sym_flags_that_contradict_the_weights_are_named(tiny_checkpoint, tmp_path):
    _, saved = _quantized(tiny_checkpoint, tmp_path)  # affine grids, then config.json edited to claim symmetric ones
    config = json.loads((saved / "config.json").read_text())
    for module in config["quantization_config"]["plan"]["modules"].values():
        module["sym"] = True
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"says model\.layers\.\d\.\S+ is quantized on a symmetric grid.*affine one"):
        export_checkpoint(saved, tmp_path / "ct", format="compressed-tensors")
    assert not (tmp_path / "ct").exists()


@pytest.mark.heavy
def test_cli_quantize_and_export_write_compressed_tensors(tiny_checkpoint, tmp_path, capsys):
    base = ["--quiet", "quantize", tiny_checkpoint, "--bits", "8,4", "--importance", "zd", "--target-bits", "6"]
    assert main([*base, "--output", str(tmp_path / "direct"), "--format", "compressed-tensors"]) == 0
    assert "(compressed-tensors)" in capsys.readouterr().out
    assert json.loads((tmp_path / "direct" / "config.json").read_text())["quantization_config"]["format"] == (
        "pack-quantized"
    )
    assert main([*base, "--output", str(tmp_path / "lw"), "--sym"]) == 0
    assert (
        main(["export", str(tmp_path / "lw"), "--format", "compressed-tensors", "--output", str(tmp_path / "ct")]) == 0
    )
    _stock_logits(tmp_path / "ct", tmp_path)
    # the input must be a layer-wise checkpoint; an existing output is kept unless --force
    assert main(["export", tiny_checkpoint, "--format", "compressed-tensors", "--output", str(tmp_path / "x")]) == 1
    assert "is not a layer-wise quantized checkpoint" in capsys.readouterr().err
    assert (
        main(["export", str(tmp_path / "lw"), "--format", "compressed-tensors", "--output", str(tmp_path / "ct")]) == 1
    )
    assert "--force" in capsys.readouterr().err


def test_only_layerwise_models_are_exported(tiny_checkpoint, tmp_path):
    from optimum_layerwise.formats.export import export_model

    plain = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    for format, destination in (("compressed-tensors", tmp_path / "ct"), ("gguf", tmp_path / "x.gguf")):
        with pytest.raises(ValueError, match="Only a layer-wise quantized model"):
            export_model(plain, destination, format)
    with pytest.raises(ValueError, match="must be one of"):
        export_model(plain, tmp_path / "x", "onnx")
    assert not any(tmp_path.iterdir())


def test_plans_that_vllm_cannot_fuse_are_named():
    from optimum_layerwise.formats.export.compressed_tensors import vllm_fusion_conflicts
    from optimum_layerwise.quantize.modules import QuantoLinear

    def packed(bits: int, group_size: int | None = 64) -> QuantoLinear:
        return QuantoLinear(64, 64, bits, group_size if bits != 8 else None, device="meta")

    attention = {f"model.layers.0.self_attn.{name}": packed(4) for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
    mlp = {"model.layers.0.mlp.gate_proj": packed(8), "model.layers.0.mlp.up_proj": packed(4)}
    assert vllm_fusion_conflicts(attention) == []
    assert vllm_fusion_conflicts({**attention, **mlp}) == [
        "model.layers.0.mlp.gate_up_proj: gate_proj 8-bit/channel, up_proj 4-bit/g64"
    ]
    attention["model.layers.0.self_attn.k_proj"] = packed(4, 32)
    assert vllm_fusion_conflicts(attention) == [
        "model.layers.0.self_attn.qkv_proj: q_proj 4-bit/g64, k_proj 4-bit/g32, v_proj 4-bit/g64"
    ]
