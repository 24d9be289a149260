"""llama.cpp as a peer on the frontier (held-out perplexity vs bits per weight): its quantizer, our evaluation.

Builds `llama-quantize` and `llama-imatrix` once from the llama.cpp vendored in the llama-cpp-python sdist, converts
a demo model's Hugging Face folder to a float32 GGUF with that tree's `convert_hf_to_gguf.py`, quantizes it to every
`--types` type and, with `--imatrix`, also to every type with an importance matrix. `llama-imatrix` computes it on our
default calibration text: the windows of the CLI's default corpus that our GPT-Q backend calibrates on (128 × 512
tokens of 'shakespeare', seed 0), decoded to text. Work files (sdist, build, GGUFs, logs) live in the cache folder,
never in the repository.

Bits per weight are counted from each GGUF: `linear_bpw` over the seven linear weights of the decoder layers (what our
layer-wise plans quantize), `file_bpw` as file bytes × 8 / all parameters (embeddings, norms, tokenizer and metadata
included). A type that llama.cpp cannot apply to a tensor falls back to another type, so `linear_types` records the
tensor types actually written.

Perplexity is measured by our code on our held-out windows ('kjv', 16 × 512 tokens), with the tokenizer of the
original folder, next to the unquantized folder (the reference row). Each GGUF is loaded through transformers, which
dequantizes it to float32 with the `gguf` package: this scores llama.cpp's weights exactly, but in float32 matmuls.
llama.cpp's own CPU kernels also quantize activations to 8 bits in their dot products, so the measurement is, if
anything, slightly favourable to llama.cpp.

    python bench/llama_cpp.py --model smollm2-135m --imatrix --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common


LLAMA_CPP_PYTHON = "0.3.36"
SYSTEM = "llama.cpp"
TOOLS = ("llama-quantize", "llama-imatrix")
SENTENCEPIECE = "sentencepiece>=0.1.98,<0.3.0"  # the tree's requirements/requirements-convert_legacy_llama.txt
DEFAULT_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "IQ4_NL", "Q4_0", "Q3_K_M", "Q3_K_S")
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_OPENSSL=OFF",  # no downloads (LLAMA_CURL, named in older trees, is deprecated in this one)
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
)
EVAL_DATASET = "kjv"
EVAL_SEQ_LEN = 512
EVAL_WINDOWS = 16
GGUF_LINEAR = re.compile(r"blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight")
HF_LINEAR = re.compile(r"model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight")


def default_cache_dir() -> Path:
    """`~/.cache/optimum_layerwise/llama.cpp-<llama-cpp-python version>`: sdist, source tree, build, work files."""
    return Path.home() / ".cache" / "optimum_layerwise" / f"llama.cpp-{LLAMA_CPP_PYTHON}"


# --- llama.cpp tools -----------------------------------------------------------------------------------------------


def run(command: Sequence[str | Path], log: Path, threads: int = 1, env: dict[str, str] | None = None) -> float:
    """Run `command` with its output in `log` (`OMP_NUM_THREADS=threads`, plus the variables of `env`); return its
    wall time in seconds.

    Raises `RuntimeError` with the end of the log when the command fails.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **(env or {})}
    begin = time.perf_counter()
    with log.open("w") as out:
        returncode = subprocess.run(
            [str(part) for part in command], stdout=out, stderr=subprocess.STDOUT, env=env
        ).returncode
    if returncode != 0:
        last_lines = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{Path(command[0]).name} exited with {returncode} (log: {log}):\n{last_lines}")
    return time.perf_counter() - begin


def source_tree(cache_dir: Path) -> Path:
    """The llama.cpp tree vendored in the llama-cpp-python sdist, downloaded with pip and unpacked into `cache_dir`
    once (unpacked next to it first, then renamed, so an interrupted run leaves no half tree)."""
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    tree = cache_dir / name / "vendor" / "llama.cpp"
    if tree.is_dir():
        return tree
    cache_dir.mkdir(parents=True, exist_ok=True)
    sdist = cache_dir / f"{name}.tar.gz"
    if not sdist.is_file():
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        run([*pip, f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", cache_dir], cache_dir / "download.log")
    with tempfile.TemporaryDirectory(dir=cache_dir) as staging, tarfile.open(sdist) as archive:
        archive.extractall(staging, filter="data")
        os.replace(Path(staging) / name, cache_dir / name)
    return tree


def build(cache_dir: Path, tree: Path) -> Path:
    """Build `llama-quantize` and `llama-imatrix` from `tree` into `cache_dir/build` unless they exist (4–11 min on 2
    cores); return the folder holding them."""
    build_dir = cache_dir / "build"
    bin_dir = build_dir / "bin"
    if all((bin_dir / tool).is_file() for tool in TOOLS):
        print(f"llama.cpp tools already built in {bin_dir}", flush=True)
        return bin_dir
    seconds = run(["cmake", "-S", tree, "-B", build_dir, *CMAKE_OPTIONS], cache_dir / "configure.log")
    seconds += run(["cmake", "--build", build_dir, "-j2", "--target", *TOOLS], cache_dir / "build.log")
    print(f"built {' '.join(TOOLS)} in {seconds:.0f} s", flush=True)
    return bin_dir


def converter_packages(cache_dir: Path) -> Path:
    """A folder in `cache_dir` holding `sentencepiece` (installed there once with pip, not into the environment):
    `convert_hf_to_gguf.py` imports it for Llama models even when the folder has no `tokenizer.model`."""
    target = cache_dir / "converter-packages"
    if not (target / "sentencepiece").is_dir():
        pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", target]
        run([*pip, SENTENCEPIECE], cache_dir / "converter-packages.log")
    return target


def convert(tree: Path, packages: Path, folder: str, output: Path, threads: int) -> Path:
    """`folder` as a float32 GGUF at `output`, converted once with the tree's `convert_hf_to_gguf.py` (which uses
    the tree's own `gguf-py`), with `packages` ([`converter_packages`]) on its path."""
    if not output.is_file():
        staging = output.with_name(f".{output.name}.partial")
        script = tree / "convert_hf_to_gguf.py"
        command = [sys.executable, script, folder, "--outtype", "f32", "--outfile", staging]
        seconds = run(command, output.with_suffix(".log"), threads, {"PYTHONPATH": str(packages)})
        os.replace(staging, output)
        print(f"converted {folder} to {output.name} in {seconds:.0f} s", flush=True)
    return output


def write_calibration_text(folder: str, output: Path) -> tuple[int, int]:
    """Write our default calibration text to `output`: the windows our GPT-Q backend calibrates on by default (the
    CLI's default corpus; the config's `num_samples`, `seq_len` and `seed` for `backend="gptq"`), decoded with the
    model's tokenizer and joined by newlines. Returns the number of windows and their length in tokens."""
    from transformers import AutoTokenizer

    from optimum_layerwise import LayerwiseQuantizationConfig
    from optimum_layerwise.cli.arguments import DEFAULT_CALIBRATION
    from optimum_layerwise.data.calibration import token_windows

    config = LayerwiseQuantizationConfig(backend="gptq", dataset=DEFAULT_CALIBRATION)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    windows = token_windows(
        config.dataset, tokenizer, num_samples=config.num_samples, seq_len=config.seq_len, seed=config.seed
    )
    output.write_text("\n".join(tokenizer.decode(window, skip_special_tokens=True) for window in windows))
    return len(windows), config.seq_len


def compute_imatrix(
    bin_dir: Path, f32: Path, text: Path, output: Path, chunks: int, chunk_len: int, threads: int
) -> tuple[float, int]:
    """`llama-imatrix` over at most `chunks` chunks of `chunk_len` tokens of `text` (no perplexity pass), written to
    `output`. Returns its wall time and the number of chunks it used (llama.cpp tokenizes the text again, so the
    count can fall short of `chunks`)."""
    log = output.with_suffix(".log")
    command = [bin_dir / "llama-imatrix", "-m", f32, "-f", text, "-o", output, "-c", chunk_len, "--chunks", chunks]
    seconds = run([*command, "--no-ppl", "-t", threads], log, threads)
    return seconds, int(re.search(r"computing over (\d+) chunks", log.read_text()).group(1))


def quantize(bin_dir: Path, f32: Path, qtype: str, output: Path, threads: int, imatrix: Path | None) -> float:
    """`llama-quantize` of `f32` to `qtype` at `output` (weighted by `imatrix` if given); returns its wall time."""
    options = ["--imatrix", imatrix] if imatrix is not None else []
    return run(
        [bin_dir / "llama-quantize", *options, f32, output, qtype, threads], output.with_suffix(".log"), threads
    )


# --- measurements --------------------------------------------------------------------------------------------------


def gguf_bits(path: Path) -> dict[str, Any]:
    """Bits per weight of a GGUF file: over the decoder layers' linear weights (`linear_bpw`, and their tensor types
    `linear_types`) and over the whole file (`file_bpw`: file bytes × 8 / all parameters)."""
    from gguf import GGUFReader

    tensors = GGUFReader(path).tensors
    linear = [tensor for tensor in tensors if GGUF_LINEAR.fullmatch(tensor.name)]
    return {
        "linear_bpw": 8 * sum(int(t.n_bytes) for t in linear) / sum(int(t.n_elements) for t in linear),
        "file_bpw": 8 * path.stat().st_size / sum(int(t.n_elements) for t in tensors),
        "file_bytes": path.stat().st_size,
        "linear_types": dict(Counter(tensor.tensor_type.name for tensor in linear)),
    }


def safetensors_bits(folder: str) -> dict[str, Any]:
    """[`gguf_bits`] of a Hugging Face folder, from the headers of its safetensors files."""
    linear_bytes = linear_elements = total_elements = file_bytes = 0
    dtypes: Counter[str] = Counter()
    from optimum_layerwise.utils.checksums import safetensors_header

    for path in sorted(Path(folder).glob("*.safetensors")):
        header, _ = safetensors_header(path)
        file_bytes += path.stat().st_size
        for name, info in header.items():
            if name == "__metadata__":
                continue
            elements = 1
            for size in info["shape"]:
                elements *= size
            total_elements += elements
            if HF_LINEAR.fullmatch(name):
                linear_bytes += info["data_offsets"][1] - info["data_offsets"][0]
                linear_elements += elements
                dtypes[info["dtype"]] += 1
    return {
        "linear_bpw": 8 * linear_bytes / linear_elements,
        "file_bpw": 8 * file_bytes / total_elements,
        "file_bytes": file_bytes,
        "linear_types": dict(dtypes),
    }


def held_out_perplexity(model, tokenizer) -> float:
    """Our perplexity on our held-out windows (`EVAL_WINDOWS` × `EVAL_SEQ_LEN` tokens of `EVAL_DATASET`)."""
    from optimum_layerwise.evaluation.perplexity import perplexity

    return perplexity(model, EVAL_DATASET, tokenizer, seq_len=EVAL_SEQ_LEN, num_windows=EVAL_WINDOWS).perplexity


def load_float32(folder: str | Path, gguf_file: str | None = None):
    """A folder's model, or one of its GGUF files dequantized by transformers, in float32."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).eval()


def reference_row(folder: str, tokenizer) -> dict[str, Any]:
    """The unquantized Hugging Face folder, measured like the GGUFs."""
    seconds, ppl = common.timed(lambda: held_out_perplexity(load_float32(folder), tokenizer))
    return {
        "system": "unquantized",
        "type": "F32",
        "imatrix": False,
        **safetensors_bits(folder),
        "perplexity": ppl,
        "seconds": 0.0,
        "eval_seconds": seconds,
        "status": "ok",
    }


def gguf_row(path: Path, qtype: str, imatrix: bool, seconds: float, tokenizer) -> dict[str, Any]:
    """One GGUF's row: its bits per weight and held-out perplexity (status `"skipped"` with the reason when
    transformers cannot load it). `seconds` is the time taken to make it."""
    row = {"system": SYSTEM, "type": qtype, "imatrix": imatrix, **gguf_bits(path), "seconds": seconds}
    try:
        eval_seconds, ppl = common.timed(lambda: held_out_perplexity(load_float32(path.parent, path.name), tokenizer))
    except Exception as error:  # e.g. a tensor type that the gguf package cannot dequantize
        return {**row, "perplexity": None, "status": "skipped", "error": f"{type(error).__name__}: {error}"}
    return {**row, "perplexity": ppl, "eval_seconds": eval_seconds, "status": "ok"}


def failed_row(qtype: str, imatrix: bool, error: Exception) -> dict[str, Any]:
    """The row of a quantization that llama.cpp refused or failed."""
    return {
        "system": SYSTEM,
        "type": qtype,
        "imatrix": imatrix,
        "linear_bpw": None,
        "file_bpw": None,
        "perplexity": None,
        "seconds": None,
        "status": "failed",
        "error": str(error),
    }


def quantized_row(bin_dir: Path, f32: Path, qtype: str, workdir: Path, threads: int, imatrix: Path | None, tokenizer):
    """Quantize `f32` to `qtype` (with `imatrix` if given) in `workdir` and measure it; a failure becomes a row."""
    output = workdir / f"{qtype}{'-imatrix' if imatrix else ''}.gguf"
    try:
        seconds = quantize(bin_dir, f32, qtype, output, threads, imatrix)
    except RuntimeError as error:
        return failed_row(qtype, imatrix is not None, error)
    return gguf_row(output, qtype, imatrix is not None, seconds, tokenizer)


# --- command line --------------------------------------------------------------------------------------------------


def write_payload(args: argparse.Namespace, settings: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write the result file atomically (temporary file in the same folder, fsync, rename): the envelope of
    `common.write_results`, the settings and the rows so far."""
    from optimum_layerwise.utils.atomic import atomic_write_text

    payload = {
        **common.envelope(args),
        **settings,
        "rows": rows,
    }
    atomic_write_text(args.output, json.dumps(payload, indent=1) + "\n")


def report(row: dict[str, Any]) -> str:
    """One printed line per row."""
    if row["status"] != "ok":
        return f"{row['type']:>8} imatrix={row['imatrix']!s:5} {row['status']}: {row['error'].splitlines()[0]}"
    return (
        f"{row['type']:>8} imatrix={row['imatrix']!s:5} linear {row['linear_bpw']:6.3f} bpw, file "
        f"{row['file_bpw']:6.3f} bpw, ppl {row['perplexity']:8.3f} ({row['eval_seconds']:.0f} s)"
    )


def demo_model_parser(benchmark: str, description: str) -> argparse.ArgumentParser:
    """The flags shared by the llama.cpp benchmarks (`common.start` reads `benchmark` and `quick`; they have no quick
    mode): `--model`, `--threads`, `--output` (default `bench/results/<benchmark>-<model>.json`) and `--cache-dir`."""
    from optimum_layerwise.data.demo_models import DEMO_MODELS

    parser = argparse.ArgumentParser(prog=f"bench/{benchmark}.py", description=description.split("\n\n")[0])
    parser.set_defaults(benchmark=benchmark, quick=False)
    parser.add_argument("--model", choices=sorted(DEMO_MODELS), default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=1, help="torch and llama.cpp threads (default: 1)")
    parser.add_argument("--output", type=Path, help=f"result JSON (default: bench/results/{benchmark}-<model>.json)")
    parser.add_argument(
        "--cache-dir", type=Path, default=default_cache_dir(), help="sdist, build (default: %(default)s)"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = demo_model_parser("llama_cpp", __doc__)
    parser.add_argument("--types", nargs="+", default=list(DEFAULT_TYPES), help=f"default: {' '.join(DEFAULT_TYPES)}")
    parser.add_argument("--imatrix", action="store_true", help="also quantize every type with an importance matrix")
    parser.add_argument("--workdir", type=Path, help="GGUFs and logs (default: <cache-dir>/work/<model>)")
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    """Build, convert, quantize, evaluate; write the result file after every row and return its path."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported: transformers' GGUF loader shows bars
    from transformers import AutoTokenizer

    from optimum_layerwise.data.demo_models import resolve_model

    args = common.start(build_parser(), argv)
    args.output = args.output or common.RESULTS_DIR / f"llama_cpp-{args.model}.json"
    workdir = args.workdir or args.cache_dir / "work" / args.model
    workdir.mkdir(parents=True, exist_ok=True)
    tree = source_tree(args.cache_dir)
    bin_dir = build(args.cache_dir, tree)
    folder = resolve_model(args.model)
    f32 = convert(tree, converter_packages(args.cache_dir), folder, workdir / "F32.gguf", args.threads)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings: dict[str, Any] = {
        "model": args.model,
        "llama_cpp_python": LLAMA_CPP_PYTHON,
        "evaluation": {"dataset": EVAL_DATASET, "seq_len": EVAL_SEQ_LEN, "num_windows": EVAL_WINDOWS},
    }
    imatrix = None
    if args.imatrix:
        text = workdir / "calibration.txt"
        windows, seq_len = write_calibration_text(folder, text)
        imatrix = workdir / "imatrix.gguf"
        seconds, chunks = compute_imatrix(bin_dir, f32, text, imatrix, windows, seq_len, args.threads)
        settings["imatrix"] = {"windows": windows, "chunks": chunks, "chunk_len": seq_len, "seconds": seconds}
        print(f"imatrix over {chunks} chunks of {seq_len} tokens in {seconds:.0f} s", flush=True)
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        print(report(row), flush=True)
        write_payload(args, settings, rows)

    record(reference_row(folder, tokenizer))
    record(gguf_row(f32, "F32", False, 0.0, tokenizer))
    for matrix in (None, imatrix) if imatrix else (None,):
        for qtype in args.types:
            record(quantized_row(bin_dir, f32, qtype, workdir, args.threads, matrix, tokenizer))
    print(f"wrote {args.output} ({time.perf_counter() - args.started:.0f} s)")
    return args.output


if __name__ == "__main__":
    main()
