"""The rows of the loader table in docs/loading.md: each stock tool runs in a fresh process, as a user would run it.

A row that says a tool opens a format without `import optimum_layerwise` asserts that the plugin was never imported.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import save_layerwise
from optimum_layerwise.data.demo_models import resolve_model
from optimum_layerwise.evaluation.tasks import write_task_configs
from optimum_layerwise.formats.export import export_checkpoint


OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

STOCK_LM_EVAL = """
import sys
from lm_eval.__main__ import cli_evaluate
sys.argv = ["lm_eval", *sys.argv[1:]]
try:
    cli_evaluate()
finally:
    assert "optimum_layerwise" not in sys.modules, "stock lm_eval imported the plugin"
"""


def _fresh(code: str, *arguments: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *arguments], capture_output=True, text=True, env=OFFLINE, cwd=cwd, timeout=1800
    )


def _layerwise(source: str, folder, **settings) -> str:
    save_layerwise(source, folder, **settings)
    return str(folder)


def _piqa_accuracy(result: subprocess.CompletedProcess, output_dir) -> float:
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = list(output_dir.rglob("results_*.json"))
    return json.loads(path.read_text())["results"]["piqa"]["acc,none"]


def _lm_eval_arguments(checkpoint: str, tmp_path, limit: int) -> list[str]:
    tasks = tmp_path / "tasks"
    write_task_configs(["piqa"], tasks)
    return [
        "--model", "hf", "--model_args", f"pretrained={checkpoint}", "--tasks", "piqa",
        "--include_path", str(tasks), "--limit", str(limit), "--batch_size", "8",
        "--output_path", str(tmp_path / "results"),
    ]  # fmt: skip


@pytest.mark.heavy
def test_plain_transformers_refuses_a_layerwise_checkpoint_without_the_import(tiny_checkpoint, tmp_path):
    """transformers has no hook to name the plugin in this error; docs/loading.md and the model card say it."""
    folder = _layerwise(tiny_checkpoint, tmp_path / "lw", bits=(8, 4), importance="zd", target_bits=6)
    code = (
        "import sys; from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained(sys.argv[1])"
    )
    result = _fresh(code, folder)
    assert result.returncode != 0 and "Unknown quantization type, got layerwise" in result.stderr
    code = "import optimum_layerwise; " + code
    assert _fresh(code, folder).returncode == 0


@pytest.mark.heavy
def test_stock_lm_eval_scores_a_compressed_tensors_export(tiny_checkpoint, tmp_path):
    folder = _layerwise(tiny_checkpoint, tmp_path / "lw", bits=(8, 4), importance="zd", target_bits=6, sym=True)
    export = export_checkpoint(folder, tmp_path / "ct", format="compressed-tensors")
    result = _fresh(STOCK_LM_EVAL, *_lm_eval_arguments(str(export), tmp_path, limit=4))
    assert 0 <= _piqa_accuracy(result, tmp_path / "results") <= 1


@pytest.mark.heavy
def test_optimum_layerwise_lm_eval_opens_layerwise_checkpoints_with_stock_flags(tiny_checkpoint, tmp_path):
    folder = _layerwise(tiny_checkpoint, tmp_path / "lw", bits=(8, 4), importance="zd", target_bits=6)
    code = "import sys; from optimum_layerwise.cli import main; sys.exit(main(['lm-eval', *sys.argv[1:]]))"
    result = _fresh(code, *_lm_eval_arguments(folder, tmp_path, limit=4))
    assert 0 <= _piqa_accuracy(result, tmp_path / "results") <= 1


@pytest.mark.heavy
def test_disk_offload_and_pipeline_after_the_import(tiny_checkpoint, tmp_path):
    folder = _layerwise(tiny_checkpoint, tmp_path / "lw", bits=(8, 4), importance="zd", target_bits=6)
    code = """
import sys, torch
import optimum_layerwise
from transformers import AutoModelForCausalLM, pipeline
path, offload = sys.argv[1], sys.argv[2]
limits = {"cpu": "60KB"}
model = AutoModelForCausalLM.from_pretrained(path, device_map="auto", max_memory=limits, offload_folder=offload)
assert "disk" in set(model.hf_device_map.values()), model.hf_device_map
full = AutoModelForCausalLM.from_pretrained(path)
ids = torch.tensor([[5, 17, 33, 2, 90, 41]])
with torch.no_grad():
    assert torch.equal(model(ids).logits, full(ids).logits)
text = pipeline("text-generation", model=full, tokenizer=path)("abc", max_new_tokens=5, do_sample=False)
print(text[0]["generated_text"][:3])
"""
    result = _fresh(code, folder, str(tmp_path / "offload"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "abc"


@pytest.mark.heavy
def test_a_sliced_checkpoint_needs_the_import_then_opens_in_lm_eval_and_pipeline(tiny_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_layerwise import LayerwiseSlicingConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    config = LayerwiseSlicingConfig(
        sparsity=0.25, dataset="shakespeare", tokenizer=tokenizer, num_samples=8, seq_len=32
    )
    folder = tmp_path / "sliced"
    AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    load = (
        "import sys; from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained(sys.argv[1])"
    )
    result = _fresh(load, str(folder))
    assert result.returncode != 0 and "Unknown quantization type, got layerwise_slicing" in result.stderr
    code = "import sys; from optimum_layerwise.cli import main; sys.exit(main(['lm-eval', *sys.argv[1:]]))"
    result = _fresh(code, *_lm_eval_arguments(str(folder), tmp_path, limit=4))
    assert 0 <= _piqa_accuracy(result, tmp_path / "results") <= 1
    code = """
import sys
import optimum_layerwise
from transformers import pipeline
text = pipeline("text-generation", model=sys.argv[1])("abc", max_new_tokens=5, do_sample=False)
print(text[0]["generated_text"][:3])
"""
    result = _fresh(code, str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "abc"


@pytest.mark.slow
def test_stock_lm_eval_scores_the_compressed_tensors_export_of_the_demo_model(tmp_path):
    """The acceptance of the export: SmolLM2-135M quantized 8/4 (symmetric), exported, scored by the stock CLI."""
    source = resolve_model("smollm2-135m")
    folder = _layerwise(source, tmp_path / "lw", bits=(8, 4), importance="zd", target_bits=6, sym=True)
    export = export_checkpoint(folder, tmp_path / "ct", format="compressed-tensors")
    result = _fresh(STOCK_LM_EVAL, *_lm_eval_arguments(str(export), tmp_path, limit=40))
    assert _piqa_accuracy(result, tmp_path / "results") >= 0.55  # unquantized: 0.725 on 40 (chance: 0.5)
