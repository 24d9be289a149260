import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_layerwise.cli import main


TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 40


@pytest.fixture
def calibration_file(tmp_path):
    path = tmp_path / "calibration.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def run_cli(capsys, *argv):
    code = main(["--quiet", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_quantize_then_inspect(tiny_checkpoint, calibration_file, tmp_path, capsys):
    output = tmp_path / "quantized"
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(output), "--bits", "4,2", "--target-bits", "3",
        "--group-size", "32", "--dataset", calibration_file, "--seq-len", "64", "--num-samples", "8",
    )  # fmt: skip
    assert code == 0, err
    assert "average bits: 3.000 over 4 decoder layers" in out
    assert "model size:" in out and (output / "config.json").is_file() and (output / "tokenizer.json").is_file()
    assert not list(tmp_path.glob(".quantized.partial-*"))
    model = AutoModelForCausalLM.from_pretrained(output)
    assert sorted(model.config.quantization_config.plan.layer_bits.values()) == [2, 2, 4, 4]
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, 128)

    code, out, err = run_cli(capsys, "inspect", str(output), "--json")
    summary = json.loads(out)
    assert summary["average_bits"] == 3.0 and summary["backend"] == "quanto"
    assert summary["layer_bits"] == {str(k): v for k, v in model.config.quantization_config.plan.layer_bits.items()}
    assert summary["budget"] == {"target_bits": 3.0} and summary["quality"]["num_windows"] >= 1
    code, out, err = run_cli(capsys, "inspect", str(output))
    assert code == 0 and "average bits: 3.000  budget: target_bits=3.0" in out and "layer" in out
    assert "quality: held-out perplexity" in out


@pytest.mark.heavy
def test_quantize_per_module_then_reuse_its_costs(tiny_checkpoint, calibration_file, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    arguments = ["--bits", "4,2", "--group-size", "32", "--granularity", "module", "--optimizer", "hqq"]
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(first), *arguments, "--target-bits", "3",
        "--dataset", calibration_file, "--seq-len", "64", "--num-samples", "8",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(run_cli(capsys, "inspect", str(first), "--json")[1])
    assert summary["granularity"] == "module" and len(summary["unit_costs"]) == 4 * 7
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(second), *arguments, "--target-bits", "3.5",
        "--reuse-costs", str(first),
    )  # fmt: skip
    assert code == 0, err
    config = AutoModelForCausalLM.from_pretrained(second).config.quantization_config
    assert (
        config.optimizer == "hqq"
        and config.plan.unit_costs
        == AutoModelForCausalLM.from_pretrained(first).config.quantization_config.plan.unit_costs
    )


def test_score_writes_json_and_heatmap(tiny_checkpoint, calibration_file, tmp_path, capsys):
    code, out, err = run_cli(
        capsys, "score", tiny_checkpoint, "--dataset", calibration_file, "--seq-len", "64",
        "--json", str(tmp_path / "scores.json"), "--plot", str(tmp_path / "scores.png"),
    )  # fmt: skip
    assert code == 0, err
    assert len(json.loads((tmp_path / "scores.json").read_text())["scores"]) == 4
    assert (tmp_path / "scores.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--importance", "magic"], "`importance` must be one of"),
        (["--bits", "4,3"], "`bits` [3] not supported by backend='quanto'"),
        (["--target-bits", "9"], "`target_bits` must lie in"),
        (["--memory-budget", "lots"], "memory_budget"),
        (["--backend", "awq"], "`backend` must be one of"),
    ],
)
def test_bad_values_give_one_line(tiny_checkpoint, calibration_file, tmp_path, capsys, extra, message):
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(tmp_path / "o"), "--dataset", calibration_file, *extra
    )
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_existing_output_needs_force(tiny_checkpoint, tmp_path, capsys):
    output = tmp_path / "taken"
    output.mkdir()
    (output / "keep.txt").write_text("x")
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(output), "--importance", "zd", "--overwrite"
    )
    assert code == 1 and "is not a layer-wise checkpoint (it holds keep.txt)" in err and "--force" in err
    assert (output / "keep.txt").exists()


def test_unwritable_output(tiny_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(blocker / "sub"), "--importance", "zd"
    )
    assert code == 1 and "not writable" in err


def test_missing_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_cli(capsys, "quantize", str(tmp_path / "no-model"), "--output", str(tmp_path / "o"))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_inspect_refuses_other_checkpoints(tiny_checkpoint, capsys):
    code, out, err = run_cli(capsys, "inspect", tiny_checkpoint)
    assert code == 1 and "not a layer-wise checkpoint" in err


def test_threads_flag_sets_torch_threads_and_openmp_waits_passively_by_default(tiny_checkpoint, capsys, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    try:
        run_cli(capsys, "--threads", "1", "inspect", tiny_checkpoint)
        assert torch.get_num_threads() == 1 and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        run_cli(capsys, "inspect", tiny_checkpoint)
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["--threads", "0", "inspect", tiny_checkpoint])
    assert "--threads must be a positive integer, got '0'" in capsys.readouterr().err


def test_argparse_errors_are_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "optimum_layerwise", "quantize", "--output", "x", "--bits", "4,x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "--bits" in result.stderr


@pytest.mark.parametrize("command", ["score", "quantize", "inspect", "eval", "sweep"])
def test_every_subcommand_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "optimum_layerwise", command, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage: optimum-layerwise" in result.stdout


def test_sensitivity_then_reuse_costs(tiny_checkpoint, calibration_file, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(first), "--bits", "8,4", "--target-bits", "6",
        "--importance", "sensitivity", "--dataset", calibration_file, "--seq-len", "64", "--group-size", "32",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(second), "--bits", "8,4", "--num-low-bit-layers", "3",
        "--importance", "sensitivity", "--reuse-costs", str(first), "--dataset", calibration_file, "--seq-len", "64",
        "--num-samples", "4", "--group-size", "32",
    )  # fmt: skip
    assert code == 0, err
    assert "average bits: 5.000" in out
    saved = [json.loads((folder / "config.json").read_text())["quantization_config"] for folder in (first, second)]
    assert saved[0]["plan"]["layer_costs"] == saved[1]["plan"]["layer_costs"] == saved[1]["layer_costs"]  # reused
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(tmp_path / "x"), "--reuse-costs", str(tiny_checkpoint)
    )
    assert code == 1 and "not a layer-wise checkpoint" in err


def test_eval_and_sweep_commands(tiny_checkpoint, calibration_file, tmp_path, capsys):
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. " * 40)
    code, out, err = run_cli(
        capsys, "eval", tiny_checkpoint, "--dataset", str(held_out), "--windows", "2", "--seq-len", "128",
        "--json", str(tmp_path / "eval.json"),
    )  # fmt: skip
    assert code == 0, err
    assert "perplexity (" in out and json.loads((tmp_path / "eval.json").read_text())["perplexity"]
    code, out, err = run_cli(
        capsys, "sweep", tiny_checkpoint, "--output", str(tmp_path / "sweep"), "--orderings", "zd,random",
        "--seeds", "0,1", "--step", "2", "--group-size", "32", "--calibration", calibration_file,
        "--eval-dataset", str(held_out), "--windows", "2", "--pruning", "depth",
    )  # fmt: skip
    assert code == 0, err
    assert {p.name for p in (tmp_path / "sweep").iterdir()} == {"sweep.json", "sweep.csv", "sweep.png", "memory.md"}
    code, out, err = run_cli(capsys, "sweep", tiny_checkpoint, "--output", str(tmp_path / "s2"), "--bits", "8,4,2")
    assert code == 1 and "two levels" in err


@pytest.mark.heavy
def test_optimum_cli_runs_the_same_commands(tiny_checkpoint, tmp_path):
    """`optimum-cli layerwise ...` (registered through optimum's `optimum.commands.register` namespace) is the same
    CLI: same help, same output, same one-line errors."""
    optimum_cli = [sys.executable, "-c", "from optimum.commands.optimum_cli import main; main()"]
    helped = subprocess.run([*optimum_cli, "layerwise", "quantize", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--memory-budget" in helped.stdout
    listed = subprocess.run([*optimum_cli, "layerwise", "--help"], capture_output=True, text=True)
    assert listed.returncode == 0 and "{score,quantize,slice,eval,sweep,lm-eval,tasks,export,inspect}" in listed.stdout
    refused = subprocess.run([*optimum_cli, "layerwise", "inspect", tiny_checkpoint], capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("optimum-layerwise inspect: error:")
    assert "Traceback" not in refused.stderr


def test_the_cli_and_the_pure_modules_need_neither_torch_nor_transformers():
    """`optimum-layerwise --help` and bad flags answer at once, and planning code runs where torch cannot load."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None  # importing either now fails\n"
        "import optimum_layerwise\n"
        "from optimum_layerwise import allocate_bits, plan\n"
        "from optimum_layerwise.plan import knapsack\n"
        "from optimum_layerwise.utils import atomic, checksums, units\n"
        "from optimum_layerwise.importance import IMPORTANCE_METHODS, needs_calibration_data\n"
        "assert needs_calibration_data('sensitivity') and IMPORTANCE_METHODS['sensitivity'].measure == 'output'\n"
        "p = plan.QuantizationPlan('model.layers', {0: 8}, {'model.layers.0.q': plan.ModulePlan(8, None, True)})\n"
        "assert plan.QuantizationPlan.from_dict(p.to_dict()) == p and units.parse_memory('1KiB') == 1024\n"
        "from optimum_layerwise.cli import main\n"
        "assert allocate_bits([0.3, 0.1, 0.2, 0.9], (8, 4), target_bits=6.0) == {0: 8, 1: 4, 2: 4, 3: 8}\n"
        "assert plan.effective_group_size(576, 128) == 96\n"
        "try:\n"
        "    main(['quantize', '--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--memory-budget" in result.stdout
