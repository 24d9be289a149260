"""Low-memory quantization: decoder layers read from the checkpoint's files one at a time, quantized layers written to
disk at once; the checkpoint it saves is byte-identical to the in-memory one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import OFFLOAD_DEVICE_MAP, build_tiny_model
from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.model.offload import is_offloaded
from optimum_layerwise.model.streaming import streaming_device_map
from optimum_layerwise.utils.system_memory import peak_resident_bytes


WINDOWS = [[(7 * i + j) % 120 + 4 for j in range(200)] for i in range(6)]
REQUESTS = {
    "zd-rtn": dict(importance="zd", num_low_bit_layers=2),
    "sensitivity-imatrix": dict(dataset=WINDOWS, seq_len=48, num_samples=4),
    "lim-three-levels": dict(importance="lim", bits=(8, 4, 2), dataset=WINDOWS, seq_len=48, num_samples=4),
}


def shard_digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.safetensors"))}


def quantize_and_save(source: str, folder: Path, **settings) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=LayerwiseQuantizationConfig(**settings))
    model.save_pretrained(folder)
    return model


@pytest.mark.heavy
@pytest.mark.parametrize("request_name", sorted(REQUESTS))
def test_low_memory_checkpoint_is_byte_identical(request_name, tiny_checkpoint, tmp_path):
    settings = REQUESTS[request_name]
    in_memory = quantize_and_save(tiny_checkpoint, tmp_path / "in-memory", low_memory=False, **settings)
    work_dir = tmp_path / "work"
    streamed = quantize_and_save(
        tiny_checkpoint, tmp_path / "streamed", low_memory=True, work_dir=str(work_dir), **settings
    )
    assert is_offloaded(streamed.model.layers[1])  # the quantized layers live on disk, not in memory
    assert streamed.model.layers[1].self_attn.q_proj.weight.is_meta
    assert sorted(path.name for path in work_dir.iterdir()) == [
        *(f"layer-{i:05d}.safetensors" for i in range(4)),
        "state.json",  # what an interrupted run resumes from
    ]
    assert not is_offloaded(in_memory.model.layers[1])
    assert shard_digests(tmp_path / "streamed") == shard_digests(tmp_path / "in-memory")
    plan, streamed_plan = in_memory.config.quantization_config.plan, streamed.config.quantization_config.plan
    assert streamed_plan == plan
    ids = torch.tensor([WINDOWS[5][:40]])
    with torch.no_grad():
        assert torch.equal(streamed(ids).logits, in_memory(ids).logits)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "streamed", device_map="auto")
        assert torch.equal(reloaded(ids).logits, in_memory(ids).logits)


def test_quantize_on_load_with_an_offloaded_device_map(tiny_checkpoint, tmp_path):
    settings = REQUESTS["sensitivity-imatrix"]
    in_memory = quantize_and_save(tiny_checkpoint, tmp_path / "in-memory", **settings)
    offloaded = AutoModelForCausalLM.from_pretrained(
        tiny_checkpoint,
        quantization_config=LayerwiseQuantizationConfig(**settings),
        device_map=OFFLOAD_DEVICE_MAP,
        offload_folder=str(tmp_path / "offload"),
    )
    assert offloaded.config.quantization_config.plan == in_memory.config.quantization_config.plan
    offloaded.save_pretrained(tmp_path / "offloaded")
    assert shard_digests(tmp_path / "offloaded") == shard_digests(tmp_path / "in-memory")


def test_auto_device_map_with_a_small_max_memory(tiny_checkpoint, tmp_path):
    quantize_and_save(tiny_checkpoint, tmp_path / "in-memory", **REQUESTS["zd-rtn"])
    model = AutoModelForCausalLM.from_pretrained(
        tiny_checkpoint,
        quantization_config=LayerwiseQuantizationConfig(**REQUESTS["zd-rtn"]),
        device_map="auto",
        max_memory={"cpu": 60_000},
        offload_folder=str(tmp_path / "offload"),
    )
    assert "disk" in model.hf_device_map.values()
    model.save_pretrained(tmp_path / "auto")
    assert shard_digests(tmp_path / "auto") == shard_digests(tmp_path / "in-memory")


def test_streaming_device_map_puts_every_layer_on_disk():
    with torch.device("meta"):
        model = build_tiny_model("qwen2")
    device_map = streaming_device_map(model)
    assert {name: device for name, device in device_map.items() if device == "disk"} == {
        f"model.layers.{i}": "disk" for i in range(4)
    }
    assert {name for name, device in device_map.items() if device != "disk"} == {
        "model.embed_tokens",
        "model.norm",
        "model.rotary_emb",
        "lm_head",
    }


def test_low_memory_refuses_the_kl_measure(tiny_checkpoint):
    config = LayerwiseQuantizationConfig(importance="sensitivity_kl", dataset=WINDOWS, seq_len=48, low_memory=True)
    with pytest.raises(ValueError, match="importance='sensitivity'"):
        AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)


@pytest.mark.parametrize("value", ["yes", 1])
def test_low_memory_must_be_a_bool_or_none(value):
    with pytest.raises(ValueError, match="`low_memory` must be True, False or None"):
        LayerwiseQuantizationConfig(low_memory=value)


def test_low_memory_settings_are_never_saved(tmp_path):
    config = LayerwiseQuantizationConfig(importance="zd", low_memory=True, work_dir=str(tmp_path))
    assert "low_memory" not in config.to_dict() and "work_dir" not in config.to_dict()


@pytest.mark.heavy
def test_cli_low_memory_writes_the_same_checkpoint_and_cleans_up(tiny_checkpoint, tmp_path):
    from optimum_layerwise.cli import main

    text = tmp_path / "calibration.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 60, encoding="utf-8")
    common = [tiny_checkpoint, "--group-size", "32", "--dataset", str(text), "--seq-len", "48", "--num-samples", "4"]
    assert main(["--quiet", "quantize", *common, "--in-memory", "--output", str(tmp_path / "in-memory")]) == 0
    assert main(["--quiet", "quantize", *common, "--low-memory", "--output", str(tmp_path / "streamed")]) == 0
    assert shard_digests(tmp_path / "streamed") == shard_digests(tmp_path / "in-memory")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["calibration.txt", "in-memory", "streamed"]


@pytest.mark.gptq
def test_gptq_low_memory_checkpoint_is_byte_identical(tiny_checkpoint, tmp_path):
    settings = GPTQ_REQUEST
    in_memory = quantize_and_save(tiny_checkpoint, tmp_path / "in-memory", low_memory=False, **settings)
    streamed = quantize_and_save(tiny_checkpoint, tmp_path / "streamed", low_memory=True, **settings)
    assert is_offloaded(streamed.model.layers[2])
    assert shard_digests(tmp_path / "streamed") == shard_digests(tmp_path / "in-memory")
    ids = torch.tensor([WINDOWS[5][:40]])
    with torch.no_grad():
        torch.testing.assert_close(streamed(ids).logits, in_memory(ids).logits, rtol=0, atol=0)


GPTQ_REQUEST = dict(backend="gptq", bits=(4, 2), group_size=32, importance="lim", dataset=WINDOWS, seq_len=48)


@pytest.mark.heavy
@pytest.mark.parametrize(
    "settings",
    [REQUESTS["sensitivity-imatrix"], pytest.param(GPTQ_REQUEST, marks=pytest.mark.gptq)],
    ids=["quanto-imatrix", "gptq"],
)
def test_an_interrupted_quantization_resumes_to_the_same_checkpoint(settings, tiny_checkpoint, tmp_path):
    from optimum_layerwise.hf.compress import quantize_model

    uninterrupted = quantize_and_save(tiny_checkpoint, tmp_path / "uninterrupted", low_memory=True, **settings)
    work_dir = tmp_path / "work"
    config = LayerwiseQuantizationConfig(low_memory=True, work_dir=str(work_dir), **settings)

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)

    def interrupt(module, args):  # Ctrl-C once layers 0 and 1 are written
        if (work_dir / "layer-00001.safetensors").exists():
            raise KeyboardInterrupt

    model.model.layers[2].register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        quantize_model(model, config)
    written = {path.name: path.stat().st_mtime_ns for path in work_dir.glob("layer-*.safetensors")}
    assert sorted(written) == ["layer-00000.safetensors", "layer-00001.safetensors"]

    resumed = quantize_and_save(
        tiny_checkpoint, tmp_path / "resumed", low_memory=True, work_dir=str(work_dir), **settings
    )
    assert {name: (work_dir / name).stat().st_mtime_ns for name in written} == written  # not quantized again
    assert shard_digests(tmp_path / "resumed") == shard_digests(tmp_path / "uninterrupted")
    assert resumed.config.quantization_config.plan == uninterrupted.config.quantization_config.plan

    other = LayerwiseQuantizationConfig(low_memory=True, work_dir=str(work_dir), **{**settings, "bits": (8, 2)})
    with pytest.raises(ValueError, match="holds the layers of another quantization"):
        AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=other)


def test_peak_resident_bytes(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  123456 kB\nVmRSS:\t  1000 kB\n")
    assert peak_resident_bytes(status) == 123456 * 1024
    assert peak_resident_bytes(tmp_path / "missing") > 0  # ru_maxrss of this process


@pytest.mark.slow
def test_a_killed_cli_job_resumes_to_the_same_checkpoint(tmp_path):
    """SIGKILL in the middle of a low-memory `optimum-layerwise quantize`, then the same command again: the checkpoint
    equals an uninterrupted run's, byte for byte."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import build_tiny_tokenizer

    source = tmp_path / "model"  # wide enough layers that a layer takes a noticeable time to quantize
    build_tiny_model("llama", hidden_size=1024, intermediate_size=4096, num_hidden_layers=6).save_pretrained(source)
    build_tiny_tokenizer().save_pretrained(source)
    text = tmp_path / "calibration.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 400, encoding="utf-8")

    def command(output: str) -> list[str]:
        return [
            sys.executable, "-m", "optimum_layerwise", "--quiet", "quantize", str(source), "--output",
            str(tmp_path / output), "--low-memory", "--work-dir", str(tmp_path / f"{output}-work"), "--dataset",
            str(text), "--seq-len", "128", "--num-samples", "8", "--group-size", "128",
        ]  # fmt: skip

    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    assert subprocess.run(command("uninterrupted"), env=environment, capture_output=True).returncode == 0
    job = subprocess.Popen(command("killed"), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed-work" / "state.json"
    while job.poll() is None and not (state.is_file() and json.loads(state.read_text())["done"]):
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    done = json.loads(state.read_text())["done"]
    assert 1 <= len(done) < 6, done  # killed with some layers written and some not
    assert not (tmp_path / "killed").exists()  # nothing half-written at the output

    resumed = subprocess.run(command("killed"), env=environment, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resuming from {tmp_path / 'killed-work'}: {len(done)} of 6 layers are done" in resumed.stderr
    assert shard_digests(tmp_path / "killed") == shard_digests(tmp_path / "uninterrupted")
    assert not (tmp_path / "killed-work").exists()  # removed once the checkpoint is saved
