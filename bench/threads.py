"""Torch threads and OpenMP's wait policy, on a quiet and on a shared machine: what the CLI's defaults rest on.

One quantization step — GPT-Q of one 576 -> 1536 Linear from 16 x 512 calibration tokens (SmolLM2's `up_proj`), or,
without gptqmodel, the calibration forward of that Linear — is timed in a fresh process for every combination of
torch threads (1, 2) and `OMP_WAIT_POLICY` (unset: OpenMP's default, which spins a while before sleeping; PASSIVE),
interleaved and repeated, with 0 and then 1 busy process beside it (`--loads`): another job on the other core of a
2-core machine. OpenMP reads the policy when torch is imported, so each measurement needs its own process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import common


THREADS = (1, 2)
POLICIES = ("unset", "PASSIVE")
SHAPE = {"full": (576, 1536, 16, 512), "quick": (256, 1024, 4, 512)}  # in, out, windows, tokens per window


def default_workload() -> str:
    """`gptq` where gptqmodel is installed, else `forward`."""
    import importlib.util

    return "gptq" if importlib.util.find_spec("gptqmodel") else "forward"


def time_workload(workload: str, threads: int, shape: Sequence[int]) -> dict[str, float]:
    """Seconds of one `workload` step on `threads` torch threads (run in a fresh process by [`measure`])."""
    import torch
    from torch import nn

    in_features, out_features, windows, tokens = shape
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        linear = nn.Linear(in_features, out_features, bias=False)
        inputs = [torch.randn(tokens, in_features) for _ in range(windows)]
        begin = time.perf_counter()
        if workload == "gptq":
            from optimum_layerwise.quantize.backends.gptq import GptqCalibrator

            calibrator = GptqCalibrator(linear, 4, 128, sym=True, desc_act=False, damp_percent=0.01)
            for batch in inputs:
                calibrator.add_batch(batch)
            calibrator.finish()
        else:
            with torch.no_grad():
                for _ in range(8):
                    for batch in inputs:
                        linear(batch)
        return {"seconds": time.perf_counter() - begin}
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """`count` processes spinning on one core each while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def measure(workload: str, threads: int, policy: str, shape: Sequence[int]) -> float:
    """Seconds of one step in a fresh process with `OMP_WAIT_POLICY` set to `policy` (or unset)."""
    saved = os.environ.pop("OMP_WAIT_POLICY", None)
    if policy != "unset":
        os.environ["OMP_WAIT_POLICY"] = policy
    try:
        return common.run_isolated("threads", "time_workload", workload=workload, threads=threads, shape=shape)[
            "seconds"
        ]
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
        if saved is not None:
            os.environ["OMP_WAIT_POLICY"] = saved


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write its result file (returned)."""
    parser = common.bench_parser("threads", __doc__.split("\n\n")[0], models=None, repeats=3)
    parser.add_argument("--workload", choices=["gptq", "forward"], help="default: gptq where gptqmodel is installed")
    parser.add_argument("--loads", nargs="+", type=int, default=[0, 1], help="busy processes beside the measurement")
    args = common.start(parser, argv)
    workload = args.workload or default_workload()
    shape = SHAPE["quick" if args.quick else "full"]
    results = {"workload": workload, "shape": dict(zip(("in", "out", "windows", "tokens"), shape)), "loads": {}}
    for load in args.loads:
        tasks = {
            f"{threads} threads, {policy}": (
                lambda threads=threads, policy=policy: measure(workload, threads, policy, shape)
            )
            for threads in THREADS
            for policy in POLICIES
        }
        with busy_processes(load):
            times = common.interleave(tasks, args.repeats)
        results["loads"][str(load)] = {name: common.summarize(values) for name, values in times.items()}
        for name, summary in results["loads"][str(load)].items():
            print(f"{load} busy: {name}: median {summary['median']:.3f} s ({summary['values']})", flush=True)
    return common.write_results(args, results)


if __name__ == "__main__":
    main()
