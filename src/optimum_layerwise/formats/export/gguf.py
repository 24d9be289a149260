"""A layer-wise plan as a GGUF file for llama.cpp and Ollama, made by llama.cpp's own tools.

llama.cpp quantizes with its own block formats, so the export does not copy our packed codes: it hands llama.cpp a
float model and the plan's bits as per-tensor types. `convert_hf_to_gguf.py` (from a llama.cpp source tree) writes a
float32 GGUF, then `llama-quantize --tensor-type-file` quantizes each decoder-layer Linear to the llama.cpp type of
its bits ([`gguf_type`]); embeddings and the output head are written in float16. The float model is either the
layer-wise checkpoint dequantized (the default: llama.cpp then rounds our already-rounded weights once more), or,
better, the full-precision model the plan was made for (`base_model`): then llama.cpp quantizes the original weights
to our plan's bits. Without llama.cpp, [`export_gguf`] writes the float folder and the type list and raises an error
whose message holds the two commands to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

from ...plan.quantization_plan import ModulePlan
from ...utils.atomic import atomic_file, atomic_folder
from .dense import copy_companions, dense_copy, packed_linears


# Hugging Face Linear names of the Llama, Mistral, Qwen2 and Gemma families -> llama.cpp tensor names
_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LAYER_MODULE = re.compile(r"(?:.+\.)?layers\.(\d+)\.(.+)")
# llama.cpp types by bits: the k-quant when the row length is a multiple of its 256-wide super-blocks, else the best
# 32-wide type of at least as many bits (llama-quantize would otherwise fall back to a wider type on its own)
_K_TYPES = {8: "Q8_0", 6: "Q6_K", 5: "Q5_K", 4: "Q4_K", 3: "Q3_K", 2: "Q2_K"}
_BLOCK32_TYPES = {8: "Q8_0", 6: "Q8_0", 5: "Q5_0", 4: "IQ4_NL", 3: "IQ4_NL", 2: "IQ4_NL"}
EMBEDDING_TYPE = "F16"


def gguf_type(bits: int, row_length: int) -> str:
    """The llama.cpp type for a weight of `bits` bits whose rows have `row_length` inputs."""
    if bits not in _K_TYPES:
        raise ValueError(f"No llama.cpp type for {bits}-bit weights; supported: {sorted(_K_TYPES)}.")
    return _K_TYPES[bits] if row_length % 256 == 0 else _BLOCK32_TYPES[bits]


def gguf_tensor_types(modules: Mapping[str, ModulePlan], in_features: Mapping[str, int]) -> dict[str, str]:
    """`{llama.cpp tensor name: type}` for every planned Linear (`in_features[name]` is its row length)."""
    types = {}
    for name, module in modules.items():
        match = _LAYER_MODULE.fullmatch(name)
        if match is None or match.group(2) not in _GGUF_NAMES:
            raise ValueError(f"{name} has no llama.cpp tensor name: GGUF export supports {sorted(_GGUF_NAMES)}.")
        tensor = f"blk.{match.group(1)}.{_GGUF_NAMES[match.group(2)]}.weight"
        types[tensor] = gguf_type(module.bits, in_features[name])
    return types


def tensor_type_file(types: Mapping[str, str]) -> str:
    """`llama-quantize --tensor-type-file` content: one `^exact\\.name$=type` pattern per tensor."""
    return "".join(f"^{re.escape(name)}$={qtype.lower()}\n" for name, qtype in sorted(types.items()))


def find_llama_cpp(tree: str | os.PathLike | None = None, quantize: str | os.PathLike | None = None):
    """`(convert_hf_to_gguf.py, llama-quantize)` of a llama.cpp source tree (`tree`, else `$LLAMA_CPP_DIR`) and its
    built `llama-quantize` (`quantize`, else `$LLAMA_QUANTIZE`, `<tree>/build/bin/`, then `PATH`); `None` for what is
    not found."""
    tree = tree or os.environ.get("LLAMA_CPP_DIR")
    script = Path(tree) / "convert_hf_to_gguf.py" if tree else None
    candidates = [quantize or os.environ.get("LLAMA_QUANTIZE")]
    if tree:
        candidates.append(Path(tree) / "build" / "bin" / "llama-quantize")
    candidates.append(shutil.which("llama-quantize"))
    binary = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    return (script if script is not None and script.is_file() else None), binary


def _commands(
    script: str, binary: str, folder: Path, types: Path, output: Path, imatrix: str | os.PathLike | None
) -> list[list[str]]:
    f32 = output.with_name(output.name + ".f32.gguf")
    weighting = ["--imatrix", str(imatrix)] if imatrix is not None else []
    return [
        [sys.executable, script, str(folder), "--outtype", "f32", "--outfile", str(f32)],
        [binary, *weighting, "--tensor-type-file", str(types), "--token-embedding-type", EMBEDDING_TYPE.lower(),
         "--output-tensor-type", EMBEDDING_TYPE.lower(), str(f32), str(output), "Q8_0"],
    ]  # fmt: skip


def _run(command: Sequence[str], log: Path, env: Mapping[str, str]) -> None:
    with log.open("w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        raise RuntimeError(f"{Path(command[1] if command[0] == sys.executable else command[0]).name} failed:\n{tail}")


def export_gguf(
    model: nn.Module,
    output: str | os.PathLike,
    *,
    base_model: str | os.PathLike | None = None,
    companion_files: Sequence[Path] = (),
    llama_cpp: str | os.PathLike | None = None,
    llama_quantize: str | os.PathLike | None = None,
    imatrix: str | os.PathLike | None = None,
) -> Path:
    """Write the plan of the layer-wise `model` as the GGUF file `output`, quantized by llama.cpp.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            A layer-wise quantized model (any backend); left unchanged.
        output (`str` or `os.PathLike`):
            The `.gguf` file to write (atomically).
        base_model (`str` or `os.PathLike`, *optional*):
            Folder of the full-precision model the plan was made for: llama.cpp then quantizes its weights. By
            default the layer-wise model's own weights, dequantized.
        companion_files (`Sequence[Path]`, *optional*):
            Tokenizer files, written next to the dequantized weights for the converter.
        llama_cpp (`str` or `os.PathLike`, *optional*):
            A llama.cpp source tree (for `convert_hf_to_gguf.py` and its `gguf-py`); default `$LLAMA_CPP_DIR`.
        llama_quantize (`str` or `os.PathLike`, *optional*):
            The built `llama-quantize`; default `$LLAMA_QUANTIZE`, `<llama_cpp>/build/bin/`, then `PATH`.
        imatrix (`str` or `os.PathLike`, *optional*):
            An importance matrix made by `llama-imatrix` for this model: llama.cpp then weighs each tensor's rounding
            error by it (our plan's bits, llama.cpp's importance-weighted rounding).

    Returns:
        `Path`: the GGUF written.

    Raises:
        `FileNotFoundError`: llama.cpp is not found; the float folder and the type list are written next to `output`
        and the message holds the commands that finish the export.
    """
    output = Path(output)
    linears = packed_linears(model)  # raises for a model that is not layer-wise quantized
    plan = model.config.quantization_config.plan
    types = gguf_tensor_types(plan.modules, {name: module.in_features for name, module in linears.items()})
    script, binary = find_llama_cpp(llama_cpp, llama_quantize)
    if script is None or binary is None:
        folder = output.with_name(output.name + ".hf")
        types_path = output.with_name(output.name + ".tensor-types.txt")
        if base_model is None:
            with atomic_folder(folder, keep_other_files=False) as staging:
                _save_dense(dense_copy(model, linears), staging, companion_files)
        with atomic_file(types_path) as staging:
            staging.write_text(tensor_type_file(types))
        source = Path(base_model) if base_model is not None else folder
        commands = _commands("convert_hf_to_gguf.py", "llama-quantize", source, types_path, output, imatrix)
        raise FileNotFoundError(
            "llama.cpp not found (pass its source tree as `llama_cpp` / --llama-cpp or set LLAMA_CPP_DIR, with "
            f"llama-quantize built). Finish the export with:\n  {' '.join(commands[0])}\n  {' '.join(commands[1])}"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.work-") as work:
        work = Path(work)
        source = Path(base_model) if base_model is not None else work / "hf"
        if base_model is None:
            _save_dense(dense_copy(model, linears), source, companion_files)
        (work / "types.txt").write_text(tensor_type_file(types))
        convert, quantize = _commands(str(script), str(binary), source, work / "types.txt", work / "out.gguf", imatrix)
        python_path = os.pathsep.join(filter(None, [str(script.parent / "gguf-py"), os.environ.get("PYTHONPATH")]))
        _run(convert, work / "convert.log", {"PYTHONPATH": python_path})  # the tree's gguf-py, then the user's
        _run(quantize, work / "quantize.log", {})
        with atomic_file(output) as staging:
            os.replace(work / "out.gguf", staging)
    return output


def _save_dense(model: nn.Module, folder: Path, companion_files: Sequence[Path]) -> None:
    model.save_pretrained(folder)
    copy_companions(companion_files, folder)
