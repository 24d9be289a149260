"""GGUF export: the plan's bits as llama.cpp tensor types, quantized by llama.cpp's own tools."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import save_layerwise
from optimum_layerwise.cli import main
from optimum_layerwise.formats.export import export_checkpoint
from optimum_layerwise.formats.export.gguf import gguf_tensor_types, gguf_type, tensor_type_file
from optimum_layerwise.plan import ModulePlan


BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_bits_map_to_llama_cpp_types_that_fit_the_rows():
    assert [gguf_type(bits, 4096) for bits in (8, 6, 5, 4, 3, 2)] == ["Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K"]
    # rows not made of 256-wide super-blocks (SmolLM2's 576): the best 32-wide type, never a silent wider fallback
    assert [gguf_type(bits, 576) for bits in (8, 4, 2)] == ["Q8_0", "IQ4_NL", "IQ4_NL"]
    with pytest.raises(ValueError, match="No llama.cpp type for 7-bit"):
        gguf_type(7, 4096)


def test_tensor_types_name_every_planned_linear():
    modules = {
        "model.layers.0.self_attn.q_proj": ModulePlan(8, None, True),
        "model.layers.11.mlp.down_proj": ModulePlan(4, 128, False),
    }
    types = gguf_tensor_types(modules, {"model.layers.0.self_attn.q_proj": 512, "model.layers.11.mlp.down_proj": 1536})
    assert types == {"blk.0.attn_q.weight": "Q8_0", "blk.11.ffn_down.weight": "Q4_K"}
    lines = tensor_type_file(types).splitlines()
    assert lines == [r"^blk\.0\.attn_q\.weight$=q8_0", r"^blk\.11\.ffn_down\.weight$=q4_k"]
    assert re.search(lines[0].split("=")[0], "blk.0.attn_q.weight") and not re.search(
        lines[0].split("=")[0], "blk.10.attn_q.weight"
    )
    with pytest.raises(ValueError, match="has no llama.cpp tensor name"):
        gguf_tensor_types({"model.layers.0.mlp.fc1": ModulePlan(4, 128, False)}, {"model.layers.0.mlp.fc1": 64})


def test_without_llama_cpp_the_error_holds_the_commands(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.delenv("LLAMA_QUANTIZE", raising=False)
    monkeypatch.setattr("optimum_layerwise.formats.export.gguf.shutil.which", lambda name: None)  # none on PATH either
    save_layerwise(tiny_checkpoint, tmp_path / "lw", bits=(8, 4), importance="zd", layer_bits={0: 8, 1: 4, 2: 4, 3: 8})
    with pytest.raises(
        FileNotFoundError, match=r"llama.cpp not found .*\n.*convert_hf_to_gguf.py .*\n.*llama-quantize"
    ):
        export_checkpoint(tmp_path / "lw", tmp_path / "tiny.gguf", format="gguf")
    assert not (tmp_path / "tiny.gguf").exists()
    types = (tmp_path / "tiny.gguf.tensor-types.txt").read_text().splitlines()
    assert len(types) == 4 * 7 and r"^blk\.1\.attn_q\.weight$=iq4_nl" in types  # 64 inputs: a 32-wide type
    dense = tmp_path / "tiny.gguf.hf"  # the dequantized model the printed commands convert
    assert "quantization_config" not in json.loads((dense / "config.json").read_text())
    assert (dense / "tokenizer.json").is_file()
    assert main(["export", str(tmp_path / "lw"), "--format", "gguf", "--output", str(tmp_path / "x.gguf")]) == 1
    assert main(["export", str(tmp_path / "lw"), "--format", "gguf", "--output", str(tmp_path / "x")]) == 1
    other = ["export", str(tmp_path / "lw"), "--format", "compressed-tensors", "--output", str(tmp_path / "ct")]
    assert main([*other, "--imatrix", "imatrix.gguf"]) == 1  # a gguf option


@pytest.fixture(scope="module")
def llama_cpp_tools():
    """llama.cpp built from the llama-cpp-python sdist (as bench/llama_cpp.py builds it; cached after the first run):
    `(source tree, bin folder, converter packages)`."""
    sys.path.insert(0, str(BENCH))
    try:
        import llama_cpp as peer  # bench/llama_cpp.py
    finally:
        sys.path.remove(str(BENCH))
    cache = peer.default_cache_dir()
    tree = peer.source_tree(cache)
    return tree, peer.build(cache, tree), peer.converter_packages(cache)


@pytest.mark.slow
def test_gguf_export_of_the_demo_model_runs_in_llama_cpp(llama_cpp_tools, tmp_path, monkeypatch):
    from gguf import GGUFReader

    from optimum_layerwise.data.demo_models import resolve_model

    tree, bin_dir, packages = llama_cpp_tools
    monkeypatch.setenv("PYTHONPATH", str(packages))  # sentencepiece, which the converter imports for Llama models
    source = resolve_model("smollm2-135m")
    model = save_layerwise(source, tmp_path / "lw", bits=(8, 4), importance="zd", target_bits=6)
    code = main([
        "export", str(tmp_path / "lw"), "--format", "gguf", "--output", str(tmp_path / "smollm2.gguf"),
        "--llama-cpp", str(tree), "--llama-quantize", str(bin_dir / "llama-quantize"),
    ])  # fmt: skip
    assert code == 0

    written = {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(tmp_path / "smollm2.gguf").tensors}
    plan = model.config.quantization_config.plan
    gguf_names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                  "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}  # fmt: skip
    for name, module in plan.modules.items():  # every Linear at the type of its bits
        tensor = f"blk.{name.split('.')[2]}.{gguf_names[name.rsplit('.', 1)[1]]}.weight"
        assert written[tensor] == gguf_type(module.bits, 1536 if "down_proj" in name else 576), name
    assert written["token_embd.weight"] == "F16"

    text = tmp_path / "text.txt"
    text.write_text(" ".join(["In the beginning God created the heaven and the earth."] * 200))
    log = subprocess.run(
        [str(bin_dir / "llama-imatrix"), "-m", str(tmp_path / "smollm2.gguf"), "-f", str(text), "-c", "128",
         "--chunks", "2", "-o", str(tmp_path / "imatrix.gguf"), "-t", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert log.returncode == 0, log.stderr[-3000:]
    estimates = [float(value) for value in re.findall(r"\[\d+\]([0-9.]+)", log.stdout + log.stderr)]
    assert estimates and all(1 < value < 50 for value in estimates), estimates  # llama.cpp runs it: a sane perplexity
