"""Every script in examples/ runs, on a tiny model, so that none rots."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import save_layerwise


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args):
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.heavy
def test_memory_budget_then_device_map(tiny_checkpoint, tmp_path):
    text = tmp_path / "calibration.txt"
    text.write_text("A tiny calibration text for a tiny model. " * 50)
    output = tmp_path / "out"
    stdout = run_example(
        "quantize_to_memory_budget.py", "--model", tiny_checkpoint, "--budget", "200KB", "--dataset", str(text),
        "--group-size", "32", "--output", str(output),
    )  # fmt: skip
    bytes_line = next(line for line in stdout.splitlines() if line.startswith("model bytes:"))
    assert int(bytes_line.split()[2].replace(",", "")) <= 200_000
    assert (output / "config.json").exists()
    stdout = run_example("load_with_device_map.py", str(output), "--prompt", "abc", "--max-new-tokens", "3")
    assert "device map:" in stdout


@pytest.mark.heavy
def test_compare_orderings(tiny_checkpoint, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("Some text to calibrate and evaluate a tiny model with, over and over. " * 60)
    stdout = run_example(
        "compare_orderings.py", "--model", tiny_checkpoint, "--calibration", str(text), "--evaluation", str(text),
        "--step", "2", "--windows", "2", "--seq-len", "64", "--group-size", "32", "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert "| sensitivity |" in stdout and (tmp_path / "out" / "sweep.png").exists()


@pytest.mark.heavy
def test_finetune_lora(tiny_checkpoint, tmp_path):
    save_layerwise(tiny_checkpoint, tmp_path / "lw", bits=(8, 4), importance="zd", target_bits=6)
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    stdout = run_example(
        "finetune_lora.py", str(tmp_path / "lw"), "--train", str(text), "--evaluation", str(text), "--steps", "20",
        "--seq-len", "32", "--windows", "4", "--output", str(tmp_path / "adapter"),
    )  # fmt: skip
    before, after = (float(word) for word in stdout.split("held-out perplexity: ")[1].split()[0:3:2])
    assert after < before  # the adapter learns the repeated sentence
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
