"""Shared helpers of the benchmark scripts: command line, models, child processes, timing, statistics, result files.

Every script in `bench/` runs in two modes: `--quick` (a tiny random Llama built in code, seconds, what
`tests/test_bench.py` runs) and full (the offline demo models). In the full mode, measurements that need a clean peak
RSS run in a fresh child process ([`run_isolated`]); in the quick mode the same tasks run in-process (the import cost
of a child, ~5 s, would dominate). Timings that are compared run side by side in one process, interleaved and repeated
([`interleave`]), and are reported as median and spread ([`summarize`]). Memory helpers are in `rss.py`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import rss


BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DEMO_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")
TINY = "tiny"
DTYPES = ("bfloat16", "float32")
RESULT_MARKER = "@@BENCH_RESULT@@"
THREADS_ENV = "BENCH_THREADS"
FRESH_PROCESSES = True  # `run_isolated` spawns a child process; `start` turns it off for `--quick`


# --- command line --------------------------------------------------------------------------------------------------


def setup_process(threads: int) -> None:
    """Pin torch to `threads` intra-op threads and silence progress bars and warnings of transformers.

    One thread by default: on a 2-core machine shared with other jobs, OpenMP threads that outnumber the free cores
    wait for each other at every op, and timings become erratic.
    """
    import torch
    from transformers.utils import logging

    torch.set_num_threads(threads)
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def bench_parser(
    name: str, description: str, models: Sequence[str] | None = DEMO_MODELS, repeats: int | None = 3
) -> argparse.ArgumentParser:
    """Arguments of `bench/<name>.py`: `--quick`, `--threads`, `--output`, `--models` unless `models` is `None`, and
    `--repeats` unless `repeats` is `None` (deterministic measurements)."""
    parser = argparse.ArgumentParser(prog=f"bench/{name}.py", description=description)
    parser.set_defaults(benchmark=name)
    parser.add_argument("--quick", action="store_true", help="tiny random Llama built in code; runs in seconds")
    if models is not None:
        parser.add_argument("--models", nargs="+", default=list(models), help=f"default: {' '.join(models)}")
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats, help=f"repetitions (default: {repeats})")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument("--output", type=Path, help="result JSON (default: bench/results/<name>[-quick].json)")
    return parser


def start(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse `argv` (default: the command line); `--quick` means the tiny model, one repeat and in-process tasks. Set
    up this process and note the start time and load average."""
    global FRESH_PROCESSES
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        if "models" in args:
            args.models = [TINY]
        if "repeats" in args:
            args.repeats = 1
    FRESH_PROCESSES = not args.quick
    os.environ[THREADS_ENV] = str(args.threads)
    setup_process(args.threads)
    args.started = time.perf_counter()
    args.loadavg_start = os.getloadavg()
    args.git_commit = _git("rev-parse", "--short", "HEAD")
    args.src_modified = bool(_git("status", "--porcelain", "--", str(BENCH_DIR.parent / "src")))
    return args


def run_per_model(
    args: argparse.Namespace,
    measure: Callable[[str, str, Path], dict[str, Any]],
    report: Callable[[str, dict[str, Any]], Iterable[str]],
) -> Path:
    """`measure(name, checkpoint_folder, workdir)` for every model of `args.models` (scratch files in a temporary
    `workdir`), print the lines of `report(name, result)` as each model finishes, then write the result file."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            workdir = Path(tmp) / name
            workdir.mkdir()
            results[name] = measure(name, model_folder(name, workdir), workdir)
            for line in report(name, results[name]):
                print(line, flush=True)
    return write_results(args, results)


# --- models --------------------------------------------------------------------------------------------------------


def tiny_config():
    """A tiny Llama config (4 layers, hidden 256: group size 128 applies, as in real models)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )


def synthetic_llama_config(
    hidden_size: int,
    num_layers: int,
    vocab_size: int = 32000,
    intermediate_size: int | None = None,
    kv_heads: int | None = None,
):
    """A Llama-2-shaped config: intermediate ≈ 2.6875 · hidden (a multiple of 128) unless given, heads of 64 (128
    from hidden 4096 up), `kv_heads` key/value heads (default: as many as heads)."""
    from transformers import LlamaConfig

    head_dim = 128 if hidden_size >= 4096 else 64
    heads = hidden_size // head_dim
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 128 * round(2.6875 * hidden_size / 128),
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


def save_random_checkpoint(config, folder: Path, dtype: str = "float32", seed: int = 0) -> str:
    """Save a randomly initialised causal LM of `config` to `folder` (safetensors) unless it exists; return it."""
    import torch
    from transformers import AutoModelForCausalLM

    if not (folder / "config.json").is_file():
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).save_pretrained(folder)
    return str(folder)


def model_folder(name: str, workdir: Path) -> str:
    """The checkpoint folder of `name`: a tiny random Llama saved under `workdir`, or an offline demo model (float32,
    converted from its GGUF file on first use)."""
    if name == TINY:
        return save_random_checkpoint(tiny_config(), workdir / TINY)
    from optimum_layerwise.data.demo_models import resolve_model

    return resolve_model(name)


def num_layers(folder: str) -> int:
    """Number of decoder layers from a checkpoint's config.json."""
    return json.loads((Path(folder) / "config.json").read_text())["num_hidden_layers"]


def layerwise_config(num_low_bit_layers: int, bits: tuple[int, int] = (4, 2)):
    """`LayerwiseQuantizationConfig` of the benchmarks: `bits` (high, low; 4/2 unless said), ZD order (no calibration
    data, so load cost is not mixed with scoring cost; LIM's cost is `scoring.py`), group size 128."""
    from optimum_layerwise import LayerwiseQuantizationConfig

    return LayerwiseQuantizationConfig(
        bits=bits, num_low_bit_layers=num_low_bit_layers, importance="zd", group_size=128
    )


def load_model(
    folder: str,
    dtype: str,
    quantization: str | None = None,
    num_low_bit_layers: int = 0,
    bits: tuple[int, int] = (4, 2),
):
    """Load `folder` in `dtype`: unquantized (`None`), with transformers' uniform `"quanto-int4"`/`"quanto-int2"`, or
    quantized on load by `"layerwise"` ([`layerwise_config`] with `num_low_bit_layers` layers at the low width of
    `bits`)."""
    import torch
    from transformers import AutoModelForCausalLM, QuantoConfig

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if quantization == "layerwise":
        kwargs["quantization_config"] = layerwise_config(num_low_bit_layers, bits)
    elif quantization is not None:
        kwargs["quantization_config"] = QuantoConfig(weights=quantization.removeprefix("quanto-"))
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()


def save_plain(folder: str, dtype: str, output: str) -> dict:
    """Child task: save an unquantized copy of `folder` in `dtype` to `output`."""
    load_model(folder, dtype).save_pretrained(output)
    return {}


def quantize_and_save(folder: str, dtype: str, num_low_bit_layers: int, output: str) -> dict:
    """Child task: quantize `folder` on load with `num_low_bit_layers` layers at 2 bits and save it to `output`."""
    model = load_model(folder, dtype, "layerwise", num_low_bit_layers)
    model.save_pretrained(output)
    return {"model_bytes": rss.model_nbytes(model)}


def random_batches(vocab_size: int, num_tokens: int, seq_len: int, batch_size: int):
    """Seeded random token windows (`num_tokens // seq_len` of them) as calibration batches."""
    import torch

    from optimum_layerwise.data.calibration import batch_windows

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (max(1, num_tokens // seq_len), seq_len), generator=generator)
    return batch_windows(ids.tolist(), batch_size)


def calibration(name: str, folder: str, num_tokens: int, seq_len: int, batch_size: int):
    """Calibration batches of about `num_tokens` tokens: random ids for the tiny model, Shakespeare (the offline
    PG19 stand-in) with the model's tokenizer otherwise."""
    from transformers import AutoTokenizer

    from optimum_layerwise.data.calibration import calibration_batches

    if name == TINY:
        return random_batches(tiny_config().vocab_size, num_tokens, seq_len, batch_size)
    return calibration_batches(
        "shakespeare",
        AutoTokenizer.from_pretrained(folder),
        num_samples=max(1, num_tokens // seq_len),
        seq_len=seq_len,
        batch_size=batch_size,
        seed=0,
    )


def prompt_ids(name: str, folder: str, length: int):
    """A `(1, length)` prompt of real text (random ids for the tiny model): the first full calibration window."""
    batches = calibration(name, folder, 8 * length, length, 1)
    return next(batch.input_ids for batch in batches if batch.num_tokens == length)


# --- child processes -----------------------------------------------------------------------------------------------

_CHILD = f"""
import importlib, json, os, sys
sys.path.insert(0, sys.argv[1])
import common
task = getattr(importlib.import_module(sys.argv[2]), sys.argv[3])
common.setup_process(int(os.environ.get("{THREADS_ENV}", "1")))
print("{RESULT_MARKER}" + json.dumps(task(**json.loads(sys.argv[4]))))
"""


def run_isolated(
    module: str, function: str, timeout: float = 1800, cgroup: Path | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Run `bench/<module>.py:function(**kwargs)` in a fresh Python process and return its JSON result.

    A fresh process per measurement makes its peak RSS ([`rss.peak_rss_bytes`]) the peak of that measurement
    alone; with `cgroup` (a memory cgroup folder, see [`rss.memory_cgroup`]) the child runs inside it from its
    first instruction. With `FRESH_PROCESSES` off (`--quick`), the task runs in this process; arguments and result
    still go through JSON, as for a child.
    """
    if not FRESH_PROCESSES:
        task = getattr(importlib.import_module(module), function)
        return json.loads(json.dumps(task(**json.loads(json.dumps(kwargs)))))
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(BENCH_DIR), module, function, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        preexec_fn=(lambda: rss.join_cgroup(cgroup)) if cgroup is not None else None,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{module}.{function}({kwargs}) failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_MARKER) :])


# --- timing and statistics -----------------------------------------------------------------------------------------


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """`(seconds, result)` of one call."""
    begin = time.perf_counter()
    result = function()
    return time.perf_counter() - begin, result


def interleave(tasks: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[Any]]:
    """Run every task once per round, `repeats` rounds, rotating the order each round so that drift in machine load
    hits every task alike. Returns each task's results, in round order."""
    names = list(tasks)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(tasks[name]())
    return results


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and spread (`(max - min) / median`, in %) of repeated measurements."""
    median = statistics.median(values)
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "spread_pct": 100 * (max(values) - min(values)) / median if median else 0.0,
        "n": len(values),
        "values": list(values),
    }


def ratio_summary(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """[`summarize`] of the per-round ratios `numerators[i] / denominators[i]` (measured side by side)."""
    return summarize([a / b for a, b in zip(numerators, denominators, strict=True)])


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least-squares `y = slope * x + intercept`, with R² and the largest relative residual."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    intercept = mean_y - slope * mean_x
    residuals = [y - (slope * x + intercept) for x, y in zip(xs, ys, strict=True)]
    total = sum((y - mean_y) ** 2 for y in ys)
    return {
        "slope": slope,
        "intercept": intercept,
        "r2": 1 - sum(r**2 for r in residuals) / total if total else 1.0,
        "max_rel_residual": max(abs(r) / y for r, y in zip(residuals, ys, strict=True)),
    }


# --- results -------------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return fields.get("Model name", "").strip()


def _git(*command: str) -> str:
    try:
        return subprocess.run(["git", *command], capture_output=True, text=True, cwd=BENCH_DIR).stdout.strip()
    except OSError:
        return ""


def _cpu_flags() -> list[str]:
    """The vector extensions that decide CPU matmul speed per dtype (bfloat16 is emulated without AVX512-BF16/AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    """Where and with what the benchmark ran, including the load average (other jobs) at its start and end."""
    import optimum.quanto
    import torch
    import transformers

    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "nproc": len(os.sched_getaffinity(0)),
        "mem_gib": round(mem_kb / 2**20, 1),
        "gpu": torch.cuda.is_available(),
        "torch_threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "optimum_quanto": getattr(optimum.quanto, "__version__", "unknown"),
        "loadavg_start": args.loadavg_start,
        "loadavg_end": os.getloadavg(),
    }


def envelope(args: argparse.Namespace) -> dict[str, Any]:
    """What every result file says around its results: the command, the code revision at the start (and whether
    `src/` had uncommitted changes then), date, run time and machine."""
    return {
        "benchmark": args.benchmark,
        "command": shlex.join(["python", f"bench/{args.benchmark}.py", *args.argv]),
        "git_commit": args.git_commit,
        "src_modified": args.src_modified,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "elapsed_s": round(time.perf_counter() - args.started, 1),
        "machine": machine_info(args),
    }


def write_results(args: argparse.Namespace, results: dict[str, Any]) -> Path:
    """Write `bench/results/<benchmark>[-quick].json` (or `--output`): the [`envelope`] around `results`."""
    payload = {**envelope(args), "quick": args.quick, "results": results}
    output = args.output or RESULTS_DIR / f"{args.benchmark}{'-quick' if args.quick else ''}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    from optimum_layerwise.utils.atomic import atomic_write_text

    atomic_write_text(output, json.dumps(payload, indent=1) + "\n")  # staged, fsynced, renamed: never half-written
    print(f"wrote {output} ({payload['elapsed_s']} s)")
    return output
