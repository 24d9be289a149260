"""`optimum-layerwise slice`: slice a model, save it atomically, inspect it."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_layerwise.cli import main


def run_cli(capsys, *argv):
    code = main(["--quiet", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.heavy
def test_slice_then_inspect(tiny_checkpoint, tmp_path, capsys):
    output = tmp_path / "sliced"
    code, out, err = run_cli(
        capsys, "slice", tiny_checkpoint, "--sparsity", "0.25", "--output", str(output), "--dataset", "shakespeare",
        "--seq-len", "64", "--num-samples", "16",
    )  # fmt: skip
    assert code == 0, err
    assert "mean sparsity: 0.250 over 4 decoder layers" in out and "quality: held-out perplexity" in out
    assert "unsliced" in out and (output / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(output)
    plan = model.config.quantization_config.plan
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, 128)

    code, out, err = run_cli(capsys, "inspect", str(output), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["method"] == "slicing" and summary["widths"] == list(plan.widths)
    assert summary["importance"] == "lim" and summary["sparsity"] == plan.sparsity
    code, out, err = run_cli(capsys, "inspect", str(output))
    assert code == 0 and "sliced: importance lim, mean sparsity 0.250 of 64 channels" in out
    table = out[out.index("layer       score   ratio  width") :].splitlines()[1:]
    assert [int(line.split()[-1]) for line in table] == list(plan.widths)

    code, out, err = run_cli(capsys, "slice", tiny_checkpoint, "--output", str(output), "--dataset", "shakespeare")
    assert code == 1 and "holds a layer-wise checkpoint; pass --overwrite" in err
    code, out, err = run_cli(
        capsys, "quantize", tiny_checkpoint, "--output", str(tmp_path / "q"), "--reuse-costs", str(output)
    )
    assert code == 1 and "is a sliced checkpoint: it holds no measured costs" in err


def test_bad_sparsity_is_refused_before_loading(tiny_checkpoint, tmp_path, capsys):
    code, out, err = run_cli(capsys, "slice", tiny_checkpoint, "--sparsity", "1.5", "--output", str(tmp_path / "x"))
    assert code == 1 and "`sparsity` must be in [0, 0.9], got 1.5" in err
    assert not (tmp_path / "x").exists()
