"""Memory before loading: from_pretrained and the CLI choose the path from the prediction, refuse a job that fits on
no path before a weight is read, and `--dry-run` prints the prediction; the prediction bounds the measured peak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from optimum_layerwise import LayerwiseQuantizationConfig, LayerwiseSlicingConfig, predict_memory
from optimum_layerwise.cli import main
from optimum_layerwise.model.offload import is_offloaded
from optimum_layerwise.pipelines import memory_estimate


WINDOWS = [[(7 * i + j) % 120 + 4 for j in range(200)] for i in range(6)]
SETTINGS = dict(bits=(4, 2), target_bits=3.0, dataset=WINDOWS, seq_len=48, num_samples=4)
JOB = Path(__file__).with_name("memory_job.py")


CALIBRATION = dict(dataset=[[(7 * i + 3 * j) % 500 for j in range(64)] for i in range(12)], seq_len=64, num_samples=4)


def wide_checkpoint(folder: Path, layers: int) -> str:
    """A Llama whose decoder layers hold most of its bytes (3.9 MB each in float32), so that a peak that grows with
    the layers shows against the process's own hundreds of MB."""
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return str(folder)


def limit_memory(monkeypatch, limit: int) -> None:
    """Make the process see `limit` bytes as all it may use (what a cgroup limit does)."""
    monkeypatch.setattr(memory_estimate, "process_memory_limit", lambda: limit)


def predictions(folder: str, **settings) -> dict[str, int]:
    choice = predict_memory(folder, LayerwiseQuantizationConfig(**settings), limit=1 << 50)
    return {estimate.path: estimate.peak_bytes for estimate in choice.estimates}


def test_a_job_that_fits_nowhere_is_refused_before_loading(tiny_checkpoint, monkeypatch):
    limit_memory(monkeypatch, 1 << 20)
    loaded = []
    monkeypatch.setattr(
        "optimum_layerwise.hf.quantizer.LayerwiseHfQuantizer._process_model_after_weight_loading",
        lambda self, model, **kwargs: loaded.append(model),
    )
    with pytest.raises(MemoryError, match=r"^Not enough memory: quantize layer by layer: .*may use 1\.0 MiB"):
        AutoModelForCausalLM.from_pretrained(
            tiny_checkpoint, quantization_config=LayerwiseQuantizationConfig(**SETTINGS)
        )
    assert not loaded
    with pytest.raises(MemoryError, match="^Not enough memory: slice in memory"):
        AutoModelForCausalLM.from_pretrained(
            tiny_checkpoint, quantization_config=LayerwiseSlicingConfig(sparsity=0.2, dataset=WINDOWS, seq_len=48)
        )


@pytest.mark.heavy
def test_layer_by_layer_is_chosen_when_only_it_fits(tmp_path, monkeypatch):
    folder = wide_checkpoint(tmp_path, 16)
    settings = dict(SETTINGS, dataset=CALIBRATION["dataset"])
    paths = predictions(folder, **settings)
    between = int((paths["layer by layer"] + paths["in memory"]) / 2 * memory_estimate.MARGIN)  # 26 MB either side
    limit_memory(monkeypatch, between)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=LayerwiseQuantizationConfig(**settings))
    assert is_offloaded(model.model.layers[1])
    limit_memory(monkeypatch, 1 << 40)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=LayerwiseQuantizationConfig(**settings))
    assert not is_offloaded(model.model.layers[1])


def test_dry_run_prints_the_prediction_and_writes_nothing(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out"
    common = ["quantize", tiny_checkpoint, "--output", str(output), "--bits", "4,2", "--target-bits", "3", "--dry-run"]
    assert main(["--quiet", *common]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("predicted peak: quantize in memory: ") and "process" in printed[0]
    assert printed[1].startswith("predicted peak: quantize layer by layer: ")
    assert printed[2].startswith("would run in memory: with 5% margin, ")
    assert not output.exists()
    limit_memory(monkeypatch, 1 << 20)
    assert main(["--quiet", *common]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("optimum-layerwise quantize: error: Not enough memory: ") and "\n" not in error
    slice_command = ["slice", tiny_checkpoint, "--output", str(output), "--dry-run", "--sparsity", "0.2"]
    assert main(["--quiet", *slice_command]) == 1 and "slice in memory" in capsys.readouterr().err


def test_score_predicts_its_peak_and_refuses_before_loading(tiny_checkpoint, capsys, monkeypatch):
    command = ["score", tiny_checkpoint, "--importance", "zd", "--dry-run"]
    assert main(["--quiet", *command]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("predicted peak: score in memory: ") and "working set" in printed[0]
    assert printed[1].startswith("would run: with 5% margin, ")
    limit_memory(monkeypatch, 1 << 20)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *args, **kwargs: pytest.fail("loaded"))
    assert main(["--quiet", *command[:-1]]) == 1
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith("optimum-layerwise score: error: Not enough memory: score in memory: ") and "\n" not in error
    )


def measure(folder: str, **settings) -> dict:
    """Predict and run a job in a fresh process (`memory_job.py`): its prediction and its measured peak."""
    result = subprocess.run(
        [sys.executable, str(JOB), folder, json.dumps(settings)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "job",
    [
        dict(bits=[4, 2], target_bits=3, low_memory=False),
        dict(bits=[4, 2], target_bits=3, low_memory=True),
        dict(bits=[4, 2], target_bits=3, importance="lim", optimizer="max", low_memory=False),
        dict(slicing=dict(sparsity=0.2)),
        dict(bits=[8, 4], target_bits=6, slicing=dict(sparsity=0.2)),
    ],
    ids=["in-memory", "layer-by-layer", "lim-rtn", "slice", "slice-then-quantize"],
)
def test_prediction_bounds_the_measured_peak_within_25_percent(job, tmp_path):
    folder = wide_checkpoint(tmp_path / "model", 8)
    if "slicing" in job:
        job = {**job, "slicing": {**job["slicing"], **CALIBRATION}}
    row = measure(folder, **job, **({} if "slicing" in job and "bits" not in job else CALIBRATION))
    assert row["measured"] <= row["predicted"] <= 1.25 * row["measured"], row


DEPTHS = (4, 24, 80)
STREAMING_JOBS = {
    "quanto": dict(bits=[4, 2], target_bits=3.0, importance="zd"),
    "gptq": dict(backend="gptq", bits=[4, 2], target_bits=3.0, group_size=128, importance="lim", **CALIBRATION),
}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["quanto", pytest.param("gptq", marks=pytest.mark.gptq)])
def test_the_layer_by_layer_peak_does_not_grow_with_the_depth(backend, tmp_path):
    """Quantizing layer by layer holds about two decoder layers whatever the depth. From 4 to 24 and 80 layers (one
    float32 file, 3.9 MB per layer), each added layer may add its bookkeeping (module objects, hooks, its column of the
    card's heatmap: under 1 MiB whatever the layer's size) and, on top, less than a tenth of its bytes to the peak of
    anonymous memory, and less than a quarter to VmHWM, which also counts the clean pages of the checkpoint that
    transformers maps while it loads (reclaimed by the kernel under a limit). Shards of 16 MB keep the save's part the
    same at every depth. The save used to count each packed layer's file once per tensor read back (a mapping each):
    VmHWM grew by 3.2 MB per layer."""
    rows, sizes = {}, {}
    for depth in DEPTHS:
        folder = wide_checkpoint(tmp_path / f"depth-{depth}", depth)
        job = {**STREAMING_JOBS[backend], "low_memory": True, "max_shard_size": "16MB"}
        rows[depth], sizes[depth] = measure(folder, **job), (Path(folder) / "model.safetensors").stat().st_size
        assert rows[depth]["path"] == "layer by layer"
    layer_bytes = (sizes[DEPTHS[-1]] - sizes[DEPTHS[0]]) / (DEPTHS[-1] - DEPTHS[0])
    print(json.dumps({"backend": backend, "layer_bytes": layer_bytes, "peaks": rows}))  # shown with `pytest -s`
    for depth in DEPTHS[1:]:
        added = depth - DEPTHS[0]
        bookkeeping = added * 2**20
        assert rows[depth]["anonymous"] - rows[DEPTHS[0]]["anonymous"] < 0.1 * added * layer_bytes + bookkeeping, rows
        assert rows[depth]["measured"] - rows[DEPTHS[0]]["measured"] < 0.25 * added * layer_bytes + bookkeeping, rows
