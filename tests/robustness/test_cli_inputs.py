"""The CLI never destroys a folder it was not clearly asked to replace, and every bad input ends in one line."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tamper import quantize

from optimum_layerwise.cli import main


def run_cli(capsys, *argv):
    code = main(["--quiet", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code, err, expected):
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err


def quantize_to(capsys, model, output, *extra):
    return run_cli(
        capsys, "quantize", model, "--output", str(output), "--importance", "zd", "--group-size", "32", *extra
    )


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A current folder holding the user's files."""
    folder = tmp_path / "work" / "inner"
    folder.mkdir(parents=True)
    (folder / "precious.txt").write_text("mine")
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("output", [".", "..", "../..", "~"])
@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--overwrite", "--force"]])
def test_never_the_current_folder_its_parents_or_home(tiny_checkpoint, workdir, capsys, output, flags):
    code, _, err = quantize_to(capsys, tiny_checkpoint, output, *flags)
    one_line_error(code, err, "--output")
    assert (workdir / "precious.txt").read_text() == "mine"
    assert not [entry for entry in workdir.parent.iterdir() if entry.name != "inner"]


@pytest.mark.parametrize("flags", [[], ["--overwrite", "--force"]])
def test_never_the_input_model(tiny_checkpoint, capsys, flags):
    before = sorted(os.listdir(tiny_checkpoint))
    code, _, err = quantize_to(capsys, tiny_checkpoint, tiny_checkpoint, *flags)
    one_line_error(code, err, "would replace the input model")
    assert sorted(os.listdir(tiny_checkpoint)) == before


@pytest.mark.heavy
def test_a_folder_of_other_files_needs_force(tiny_checkpoint, tmp_path, capsys):
    output = tmp_path / "taken"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    code, _, err = quantize_to(capsys, tiny_checkpoint, output, "--overwrite")
    one_line_error(code, err, "pass --force")
    assert (output / "notes.txt").read_text() == "mine"
    code, out, err = quantize_to(capsys, tiny_checkpoint, output, "--force")
    assert code == 0, err
    assert not (output / "notes.txt").exists() and (output / "config.json").is_file()


@pytest.mark.heavy
def test_a_checkpoint_needs_overwrite_and_is_replaced_whole(tiny_checkpoint, tmp_path, capsys):
    output = tmp_path / "out"
    assert quantize_to(capsys, tiny_checkpoint, output)[0] == 0
    code, _, err = quantize_to(capsys, tiny_checkpoint, output)
    one_line_error(code, err, "pass --overwrite")
    code, _, err = quantize_to(capsys, tiny_checkpoint, output, "--overwrite", "--num-low-bit-layers", "1")
    assert code == 0, err
    layer_bits = json.loads((output / "config.json").read_text())["quantization_config"]["plan"]["layer_bits"]
    assert sorted(layer_bits.values()) == [4, 8, 8, 8]
    assert [entry.name for entry in tmp_path.iterdir()] == ["out"]  # no staging folder left


@pytest.mark.heavy
def test_overwrite_keeps_the_users_files_and_force_replaces_the_folder(tiny_checkpoint, tmp_path, capsys):
    output = tmp_path / "out"
    assert quantize_to(capsys, tiny_checkpoint, output)[0] == 0
    (output / "notes.txt").write_text("mine")
    (output / "model-00001-of-00002.safetensors").write_bytes(b"stale shard of an older save")
    code, _, err = quantize_to(capsys, tiny_checkpoint, output, "--overwrite", "--num-low-bit-layers", "1")
    assert code == 0, err
    assert (output / "notes.txt").read_text() == "mine"  # as save_pretrained into the folder keeps it
    assert not (output / "model-00001-of-00002.safetensors").exists()  # files of the old checkpoint are replaced
    assert quantize_to(capsys, tiny_checkpoint, output, "--force")[0] == 0
    assert not (output / "notes.txt").exists()  # --force: the folder's content is replaced, as its help says


def test_a_fifo_as_dataset_is_refused_instead_of_waiting_forever(tiny_checkpoint, tmp_path):
    fifo = tmp_path / "calibration.txt"
    os.mkfifo(fifo)  # nothing ever writes to it: reading it would block until killed
    command = [sys.executable, "-m", "optimum_layerwise", "--quiet", "quantize", tiny_checkpoint]
    command += ["--output", str(tmp_path / "out"), "--dataset", str(fifo), "--importance", "lim", "--group-size", "32"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)  # about 8 s when refused
    one_line_error(result.returncode, result.stderr, "is not a regular file")


def test_an_output_that_is_a_file(tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    one_line_error(*quantize_to(capsys, tiny_checkpoint, path)[::2], "is a file")
    assert path.read_text() == "x"


def test_quantizing_a_quantized_checkpoint_is_refused(tiny_checkpoint, tmp_path, capsys):
    quantize(tiny_checkpoint).save_pretrained(tmp_path / "q")
    code, _, err = run_cli(
        capsys, "quantize", str(tmp_path / "q"), "--output", str(tmp_path / "o"), "--target-bits", "5"
    )
    one_line_error(code, err, "is already quantized (quant_method='layerwise')")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["eval", "MODEL", "--windows", "0"], "--windows must be a positive integer, got '0'"),
        (["eval", "MODEL", "--seq-len", "-1"], "--seq-len must be a positive integer, got '-1'"),
        (["eval", "MODEL", "--limit", "x"], "--limit must be a positive integer"),
        (["quantize", "MODEL", "--output", "o", "--num-samples", "0"], "--num-samples must be a positive integer"),
        (["quantize", "MODEL", "--output", "o", "--seed", str(2**70)], "--seed must be an integer in [0, 2**63)"),
        (["sweep", "MODEL", "--output", "o", "--seeds", "a"], "--seeds must be comma-separated integers"),
        (["sweep", "MODEL", "--output", "o", "--step", "0"], "--step must be a positive integer"),
        (["quantize", "MODEL", "--output", "o", "--bits", "3,x"], "--bits must be comma-separated integers"),
    ],
)
def test_bad_flags_are_named(tiny_checkpoint, tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([tiny_checkpoint if part == "MODEL" else part for part in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and expected in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["quantize", "score", "eval"])
@pytest.mark.parametrize("path", ["/no/such/model", "./missing-model", "a/b/c"])
def test_a_missing_model_folder_is_said_so(tmp_path, capsys, command, path):
    extra = ["--output", str(tmp_path / "o")] if command == "quantize" else []
    code, _, err = run_cli(capsys, command, path, *extra)
    one_line_error(code, err, f"{path}: no such folder")


def test_data_free_importance_needs_no_tokenizer(tiny_checkpoint, tmp_path, capsys):
    for name in os.listdir(tiny_checkpoint):
        if "token" in name:
            os.remove(os.path.join(tiny_checkpoint, name))
    code, out, err = quantize_to(capsys, tiny_checkpoint, tmp_path / "o")
    assert code == 0, err
    code, _, err = run_cli(capsys, "quantize", tiny_checkpoint, "--output", str(tmp_path / "p"), "--importance", "lim")
    one_line_error(code, err, "cannot load the tokenizer")


def broken_checkpoints():
    def unknown_dtype(folder):
        data = bytearray((folder / "model.safetensors").read_bytes())
        start = data.index(b'"dtype":"') + len(b'"dtype":"')
        data[start : start + 2] = b"Q9"
        (folder / "model.safetensors").write_bytes(bytes(data))

    def config_edit(change):
        def edit(folder):
            config = json.loads((folder / "config.json").read_text())
            change(config)
            (folder / "config.json").write_text(json.dumps(config))

        return edit

    return {
        "unknown dtype": (unknown_dtype, "unknown dtype"),
        "empty layer_bits": (
            config_edit(lambda c: c["quantization_config"]["plan"].update(layer_bits={})),
            "plan.layer_bits is empty",
        ),
        "string quantization_config": (
            config_edit(lambda c: c.update(quantization_config="layerwise")),
            "its quantization_config is a str",
        ),
        "bad layer_bits key": (
            config_edit(lambda c: c["quantization_config"]["plan"].update(layer_bits={"x": 4})),
            "keys must be decoder-layer indices",
        ),
        "config not JSON": (lambda folder: (folder / "config.json").write_text("{"), "is not valid JSON"),
        "header not JSON": (
            lambda folder: (folder / "model.safetensors").write_bytes(b"\x04\x00\x00\x00\x00\x00\x00\x00{{{{"),
            "header is not JSON",
        ),
    }


@pytest.mark.parametrize("case", sorted(broken_checkpoints()))
def test_inspect_explains_a_broken_checkpoint(tiny_checkpoint, tmp_path, capsys, case):
    break_it, expected = broken_checkpoints()[case]
    folder = tmp_path / "q"
    quantize(tiny_checkpoint).save_pretrained(folder)
    break_it(folder)
    code, _, err = run_cli(capsys, "inspect", str(folder))
    one_line_error(code, err, expected)


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child: SIGINT handled by default, as in a terminal (a test run started in the background with `&` by a
    script passes SIGINT on as ignored, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_exits_130(tiny_checkpoint, tmp_path):
    text = tmp_path / "calibration.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 40000)
    command = [  # LIM reads all 2500 batches: about 20 s of work on an idle machine
        sys.executable, "-m", "optimum_layerwise", "quantize", tiny_checkpoint, "--output", str(tmp_path / "o"),
        "--importance", "lim", "--dataset", str(text), "--seq-len", "32", "--num-samples", "20000",
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
    seen, deadline = "", time.monotonic() + 120
    while "Scoring layers (LIM)" not in seen and time.monotonic() < deadline:  # in the middle of the long step
        ready, _, _ = select.select([process.stderr], [], [], 1)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096).decode(errors="replace")
    assert "Scoring layers (LIM)" in seen, seen[-2000:]
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130
    assert rest.strip().splitlines()[-1] == "optimum-layerwise quantize: interrupted"
    assert "Traceback" not in seen + rest
    assert not (tmp_path / "o").exists() and not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".o")]
