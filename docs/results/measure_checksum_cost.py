"""Time the sha256 manifest of a checkpoint: what `save_pretrained` adds per GB, and what `inspect --verify` (or
`verify=True` at load) costs per GB.

    python docs/results/measure_checksum_cost.py --gigabytes 1 --repeats 3

Writes a safetensors file of the given size (256 int8 tensors of random bytes) into a temporary folder, then times
`write_checksums` and `verify_checksums` on it, with the file in the page cache (right after a save, as at save time)
and, when run as root on Linux, after dropping the page cache (cold, as for a downloaded checkpoint).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from optimum_layerwise.utils.checksums import verify_checksums, write_checksums


def _drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of the test checkpoint (default: 1)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = int(args.gigabytes * 10**9)
    per_tensor = size // 256
    with tempfile.TemporaryDirectory() as folder:
        generator = torch.Generator().manual_seed(0)
        tensors = {
            f"tensor.{index}": torch.randint(-128, 128, (per_tensor,), dtype=torch.int8, generator=generator)
            for index in range(256)
        }
        save_file(tensors, os.path.join(folder, "model.safetensors"))
        del tensors
        gigabytes = os.path.getsize(os.path.join(folder, "model.safetensors")) / 10**9
        timings: dict[str, list[float]] = {"write (warm)": [], "verify (warm)": [], "verify (cold)": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            write_checksums(folder)
            timings["write (warm)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            assert verify_checksums(folder) == []
            timings["verify (warm)"].append(time.perf_counter() - start)
            if _drop_page_cache():
                start = time.perf_counter()
                assert verify_checksums(folder) == []
                timings["verify (cold)"].append(time.perf_counter() - start)
    print(f"checkpoint: {gigabytes:.2f} GB, {args.repeats} repeats, median (min-max) seconds per GB")
    for name, values in timings.items():
        if values:
            per_gb = [value / gigabytes for value in values]
            print(f"{name:>14}: {statistics.median(per_gb):.2f} s/GB ({min(per_gb):.2f}-{max(per_gb):.2f})")


if __name__ == "__main__":
    main()
