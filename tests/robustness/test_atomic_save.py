"""A save never loses the previous checkpoint: killed, interrupted or out of space, the folder holds the complete old
checkpoint or the complete new one."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap

import pytest
from tamper import BITS_A, BITS_B, card_layer_bits, quantize, saved_layer_bits
from transformers import AutoModelForCausalLM

from optimum_layerwise.utils.atomic import STAGING_MARK, atomic_folder
from optimum_layerwise.utils.checksums import CHECKSUMS_NAME, verify_checksums


# A child process that quantizes the tiny model with BITS_B and saves it over `dest`, SIGKILLing itself at the
# n-th Python function call of the save (0: never; it then prints how many calls the save made).
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import optimum_layerwise
    from transformers import AutoModelForCausalLM
    from optimum_layerwise import LayerwiseQuantizationConfig

    source, dest, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = LayerwiseQuantizationConfig(
        bits=(4, 2), importance="zd", layer_bits={0: 2, 1: 2, 2: 4, 3: 4}, group_size=32
    )
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=config)
    model.layerwise_eval_results = {"perplexity (kjv)": 2.0}
    calls = 0

    def profile(frame, event, arg):
        global calls
        if event == "call":
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.setprofile(profile)
    model.save_pretrained(dest)
    sys.setprofile(None)
    print(calls)
    """
)


def run_child(source, dest, kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(source), str(dest), str(kill_at)], capture_output=True, text=True
    )


def assert_complete(folder, allowed):
    """`folder` loads, matches its checksum manifest (config, every tensor) and holds one of the `allowed` plans."""
    assert verify_checksums(folder) == []
    assert saved_layer_bits(folder) in allowed
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.quantization_config.plan.layer_bits in allowed
    assert card_layer_bits(folder) == saved_layer_bits(folder)  # the card describes the weights beside it


@pytest.mark.slow
def test_killed_at_any_point_of_a_save_the_folder_holds_a_complete_checkpoint(tiny_checkpoint, tmp_path):
    dest = tmp_path / "model"
    quantize(tiny_checkpoint).save_pretrained(dest)  # the previous good checkpoint: BITS_A
    finished = run_child(tiny_checkpoint, tmp_path / "count", 0)
    assert finished.returncode == 0, finished.stderr
    total = int(finished.stdout.split()[-1])
    assert total > 100  # the save is observable at a fine grain
    points = sorted({1 + round(total * fraction) for fraction in (0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.97)})
    outcomes = []
    for kill_at in points:
        result = run_child(tiny_checkpoint, dest, kill_at)
        assert result.returncode == -signal.SIGKILL, (kill_at, result.stderr[-2000:])
        assert_complete(dest, [BITS_A, BITS_B])
        outcomes.append(saved_layer_bits(dest) == BITS_B)
    assert outcomes[0] is False  # killed at the start: the old checkpoint is untouched
    leftovers = [entry for entry in tmp_path.iterdir() if STAGING_MARK in entry.name]
    assert leftovers  # SIGKILL leaves the staging folder behind ...
    quantize(tiny_checkpoint, layer_bits=BITS_B).save_pretrained(dest)
    assert not [entry for entry in tmp_path.iterdir() if STAGING_MARK in entry.name]  # ... the next save removes it
    assert_complete(dest, [BITS_B])


@pytest.mark.slow
def test_a_full_disk_leaves_the_previous_checkpoint(tiny_checkpoint, tmp_path):
    """RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a full disk fails with ENOSPC."""
    dest = tmp_path / "model"
    quantize(tiny_checkpoint).save_pretrained(dest)
    before = {path.name: path.read_bytes() for path in dest.iterdir()}
    limit = (dest / "model.safetensors").stat().st_size // 2
    code = CHILD.replace(
        "sys.setprofile(profile)",
        "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (SIZE_LIMIT, SIZE_LIMIT))",
    )
    code = code.replace("SIZE_LIMIT", str(limit))
    result = subprocess.run(
        [sys.executable, "-c", code, tiny_checkpoint, str(dest), "0"],
        capture_output=True,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
    )
    assert result.returncode != 0 and "File too large" in result.stderr
    assert {path.name: path.read_bytes() for path in dest.iterdir()} == before
    assert not [entry for entry in tmp_path.iterdir() if entry.name != "model"]  # staging removed on the error


def test_an_exception_during_the_save_leaves_the_previous_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    dest = tmp_path / "model"
    quantize(tiny_checkpoint).save_pretrained(dest)
    before = {path.name: path.read_bytes() for path in dest.iterdir()}
    model = quantize(tiny_checkpoint, layer_bits=BITS_B)
    import optimum_layerwise.hf.hub as hub

    def interrupted(folder):
        raise KeyboardInterrupt  # Ctrl-C after the weights and the card are written

    monkeypatch.setattr(hub, "write_checksums", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(dest)
    assert {path.name: path.read_bytes() for path in dest.iterdir()} == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["model"]


def test_saving_into_a_folder_keeps_the_users_other_files(tiny_checkpoint, tmp_path):
    dest = tmp_path / "model"
    quantize(tiny_checkpoint).save_pretrained(dest)
    (dest / "notes.txt").write_text("mine")
    (dest / "results").mkdir()
    (dest / "results" / "eval.json").write_text("{}")
    (dest / "model-00001-of-00002.safetensors").write_bytes(b"stale shard")
    quantize(tiny_checkpoint, layer_bits=BITS_B).save_pretrained(dest)
    assert (dest / "notes.txt").read_text() == "mine" and (dest / "results" / "eval.json").read_text() == "{}"
    assert not (dest / "model-00001-of-00002.safetensors").exists()  # stale weights go, as transformers does
    assert saved_layer_bits(dest) == BITS_B and (dest / CHECKSUMS_NAME).is_file()


def test_files_get_the_permissions_of_a_plain_write(tiny_checkpoint, tmp_path):
    old_mask = os.umask(0o022)
    try:
        quantize(tiny_checkpoint).save_pretrained(tmp_path / "model")
        with atomic_folder(tmp_path / "other") as staging:
            (staging / "file.txt").write_text("x")
    finally:
        os.umask(old_mask)
    for folder in (tmp_path / "model", tmp_path / "other"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.mark.parametrize("target", [".", ".."])
def test_saving_over_the_current_folder_is_refused(tiny_checkpoint, tmp_path, monkeypatch, target):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "precious.txt").write_text("x")
    monkeypatch.chdir(workdir)
    model = quantize(tiny_checkpoint)
    with pytest.raises(ValueError, match="is the current folder or one of its parents"):
        model.save_pretrained(target)
    assert (workdir / "precious.txt").read_text() == "x"


def test_a_save_inside_a_staging_folder_writes_straight_into_it(tiny_checkpoint, tmp_path):
    """The CLI saves model and tokenizer in one atomic folder: the model's own atomic save writes into that staging
    folder instead of staging a second one next to it (which a kill left behind, out of reach of the cleanup)."""
    model = quantize(tiny_checkpoint)
    with atomic_folder(tmp_path / "ckpt") as staging:
        inode = staging.stat().st_ino
        model.save_pretrained(staging)
        assert staging.stat().st_ino == inode  # written in place, not staged next to it and swapped in
    assert (tmp_path / "ckpt" / "config.json").is_file() and [e.name for e in tmp_path.iterdir()] == ["ckpt"]


def test_nested_staging_left_by_a_killed_save_is_removed_by_the_next_one(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    outer = f".ckpt.layerwise-staging-{pid}-abc"
    nested = tmp_path / f".{outer}.layerwise-staging-{pid}-def"
    nested.mkdir()
    (nested / "model.safetensors").write_bytes(b"half a model")
    with atomic_folder(tmp_path / "ckpt") as staging:
        (staging / "config.json").write_text("{}")
    assert [entry.name for entry in tmp_path.iterdir()] == ["ckpt"]


def test_saving_over_the_unquantized_source_is_refused(tiny_checkpoint, tmp_path):
    source = tmp_path / "float"
    shutil.copytree(tiny_checkpoint, source)
    before = {path.name: path.read_bytes() for path in source.iterdir()}
    model = quantize(str(source))
    with pytest.raises(ValueError, match="is the folder the unquantized model was loaded from.*overwrite_source=True"):
        model.save_pretrained(source)
    assert {path.name: path.read_bytes() for path in source.iterdir()} == before
    model.save_pretrained(source, overwrite_source=True)
    assert saved_layer_bits(source) == BITS_A
    again = AutoModelForCausalLM.from_pretrained(source)  # a layer-wise checkpoint now: saving over it is fine
    again.save_pretrained(source)


def on_a_small_disk(size: str, *command: str) -> subprocess.CompletedProcess:
    """Run `command` with a tmpfs of `size` mounted at `/mnt` (in a user and mount namespace of its own: no root
    needed, and the mount ends with the command)."""
    script = f'mount -t tmpfs -o size={size} tmpfs /mnt && exec "$@"'
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.heavy
def test_a_save_that_cannot_fit_is_refused_before_writing(tiny_checkpoint):
    result = on_a_small_disk(
        "256k", sys.executable, "-m", "optimum_layerwise", "--quiet", "quantize", tiny_checkpoint, "--output",
        "/mnt/out", "--importance", "zd", "--group-size", "32",
    )  # fmt: skip
    last = result.stderr.strip().splitlines()[-1]  # the lines before it are the quantization's own report
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert last.startswith("optimum-layerwise quantize: error: [Errno 28] Not enough disk space to write /mnt/out")
    assert "KiB free" in last


def test_a_disk_that_fills_up_during_a_write_gives_one_line_and_leaves_the_folder(tmp_path):
    code = textwrap.dedent(
        """
        from pathlib import Path
        from optimum_layerwise.utils.atomic import atomic_folder
        target = Path("/mnt/ckpt")
        with atomic_folder(target) as staging:
            (staging / "old.txt").write_text("previous checkpoint")
        try:
            with atomic_folder(target, keep_other_files=False) as staging:
                (staging / "model.safetensors").write_bytes(bytes(4 * 2**20))  # more than the disk holds
        except OSError as error:
            print(error)
        print(sorted(path.name for path in Path("/mnt").iterdir()), (target / "old.txt").read_text())
        """
    )
    result = on_a_small_disk("1m", sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    error, listing = result.stdout.strip().splitlines()
    assert "The disk filled up while writing /mnt/ckpt" in error and "the folder was left as it was" in error
    assert listing == "['ckpt'] previous checkpoint"
