"""vLLM opens our compressed-tensors exports: its own configuration parsing picks, for every (fused) Linear, the
scheme of the plan. vLLM needs a CUDA build of PyTorch, so the parsing runs in a separate environment (vLLM's wheel
installed without its CUDA dependencies, next to PyTorch 2.13 for CPU), built once and cached; the GPU smoke test runs
where CUDA and vLLM are present."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest
import torch

from conftest import save_layerwise
from optimum_layerwise.formats.export import export_checkpoint


HERE = Path(__file__).parent / "vllm"
VLLM_VERSION = "0.33.0"
LAYER_BITS = {0: 8, 1: 4, 2: 2, 3: 4}
VLLM_MODULES = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


def vllm_python() -> Path:
    """Python of an environment with vLLM's wheel (no CUDA packages) and PyTorch 2.13 for CPU, created on first use
    in the cache (about 2 min and 2.2 GB) from the pinned `tests/formats/export/vllm/requirements.txt`."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optimum_layerwise"
    folder = cache / f"vllm-{VLLM_VERSION}-cpu-venv"
    python = folder / "bin" / "python"
    stamp = folder / ".installed"
    requirements = (HERE / "requirements.txt").read_text()
    if stamp.is_file() and stamp.read_text() == requirements:
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "--no-deps", "-r", str(HERE / "requirements.txt")], check=True)
    stamp.write_text(requirements)
    return python


def vllm_schemes(checkpoint: Path, names: list[str]) -> dict:
    result = subprocess.run(
        [str(vllm_python()), str(HERE / "schemes.py"), str(checkpoint), *names], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_vllm_reads_every_layer_at_its_planned_bits(tiny_checkpoint, tmp_path):
    model = save_layerwise(
        tiny_checkpoint, tmp_path / "layerwise", bits=(8, 4, 2), layer_bits=LAYER_BITS, group_size=32, sym=True
    )
    export = export_checkpoint(tmp_path / "layerwise", tmp_path / "ct", format="compressed-tensors")
    names = [f"model.layers.{i}.{module}" for i in range(4) for module in VLLM_MODULES]
    schemes = vllm_schemes(export, [*names, "lm_head"])
    assert schemes.pop("lm_head") is None  # left dense, as the export says
    plan = model.config.quantization_config.plan
    for name, scheme in schemes.items():
        first_part = name.replace("qkv_proj", "q_proj").replace("gate_up_proj", "gate_proj")
        planned = plan.modules[first_part]
        group_size = None if planned.bits == 8 else planned.group_size
        assert scheme == ["CompressedTensorsWNA16", planned.bits, group_size], name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM serving needs a CUDA GPU")
def test_vllm_generates_from_an_export_on_a_gpu(tmp_path):
    """GPU smoke test: vLLM (installed in this environment) serves the SmolLM2 export and writes sensible text."""
    vllm = pytest.importorskip("vllm")
    from optimum_layerwise.data.demo_models import resolve_model

    source = resolve_model("smollm2-135m")
    save_layerwise(source, tmp_path / "layerwise", bits=(8, 4), importance="zd", target_bits=6, sym=True)
    export = export_checkpoint(tmp_path / "layerwise", tmp_path / "ct", format="compressed-tensors")
    llm = vllm.LLM(model=str(export), dtype="float16", max_model_len=256, gpu_memory_utilization=0.3)
    output = llm.generate(["The capital of France is"], vllm.SamplingParams(max_tokens=8, temperature=0))
    assert "Paris" in output[0].outputs[0].text, output[0].outputs[0].text
