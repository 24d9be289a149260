"""Memory measurements of the benchmarks: bytes a model's tensors hold, and the resident set size of this process.

RSS is read from `/proc/self` (Linux). A measurement that needs a clean peak runs in a fresh process
(`common.run_isolated`); [`baseline_process`] gives the floor such a process has before it loads anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading
from collections.abc import Iterator
from pathlib import Path


def tensor_storage_nbytes(tensor) -> int:
    """Bytes a tensor really holds: optimum-quanto tensor subclasses are flattened into their inner tensors (their
    outer `numel() * element_size()` is the float weight's, which overstates a packed weight by 4-8x)."""
    import torch

    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_storage_nbytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def model_nbytes(model) -> int:
    """Bytes of all parameters and buffers of `model` (shared tensors once), quanto tensors flattened."""
    unique = {id(tensor): tensor for tensor in [*model.parameters(), *model.buffers()]}
    return sum(tensor_storage_nbytes(tensor) for tensor in unique.values())


def cached_kernel_nbytes(model) -> int:
    """Bytes of the TinyGemm copies that `QuantoLinear` caches next to its packed weight (after a first forward)."""
    from optimum_layerwise.quantize.modules import QuantoLinear

    return sum(
        tensor_storage_nbytes(module._optimized[1])
        for module in model.modules()
        if isinstance(module, QuantoLinear) and getattr(module, "_optimized", None) is not None
    )


def touch_tensors(model) -> None:
    """Read every parameter and buffer of `model` once. transformers memory-maps safetensors files, so the pages of a
    tensor that was never read are not resident yet; after this, RSS holds the whole model."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()


def _status_bytes() -> dict[str, int]:
    """The memory fields of `/proc/self/status` (`VmHWM`, `RssAnon`, ...), in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.endswith(" kB"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image so far (`VmHWM`).

    Not `ru_maxrss`: Linux carries a process's `ru_maxrss` across fork and exec, so a child started by a parent that
    once held 1 GB reports at least 1 GB whatever it does itself; `VmHWM` starts afresh with the new image at exec.
    """
    return _status_bytes()["VmHWM"]


def rss_bytes() -> int:
    """Current resident set size of this process, as the kernel reports it."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_rss_bytes() -> int:
    """Current resident set size after `gc.collect()` and glibc's `malloc_trim(0)`, i.e. without the freed memory
    that glibc keeps mapped (which can double the raw RSS right after quantization)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss_bytes()


def rss_breakdown() -> dict[str, int]:
    """Current anonymous (heap), file-backed (mapped checkpoint pages) and shared RSS of this process, in bytes."""
    fields = _status_bytes()
    return {"anon": fields["RssAnon"], "file": fields["RssFile"], "shmem": fields["RssShmem"]}


class RssSampler:
    """Context manager: a thread samples [`rss_breakdown`] every `interval` seconds and keeps the peaks of anonymous
    memory (what cannot be reclaimed), of file-backed pages (memory-mapped safetensors, reclaimable) and of their sum.
    Short spikes between two samples can be missed; [`peak_rss_bytes`] catches them, without the split."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peaks = {"anon": 0, "file": 0, "total": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = rss_breakdown()
        total = rss["anon"] + rss["file"] + rss["shmem"]
        for key, value in (("anon", rss["anon"]), ("file", rss["file"]), ("total", total)):
            self.peaks[key] = max(self.peaks[key], value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def baseline_process() -> dict[str, int]:
    """Child task: import everything a measurement imports, load nothing; the RSS floor to subtract."""
    import optimum.quanto  # noqa: F401
    from transformers import AutoModelForCausalLM  # noqa: F401

    import optimum_layerwise  # noqa: F401

    return {"peak_rss": peak_rss_bytes(), "live_rss": live_rss_bytes(), **rss_breakdown()}


CGROUP_ROOT = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def memory_cgroup(name: str, limit_bytes: int) -> Iterator[Path]:
    """A memory cgroup `name` limited to `limit_bytes` (cgroup v1 `memory` controller, else v2), removed on exit.
    Needs root. Yields its folder, for [`join_cgroup`].

    The limit covers the page cache of files the processes in it read: pages of memory-mapped checkpoints count until
    the kernel reclaims them under pressure, which it does before it kills anything.
    """
    v1 = CGROUP_ROOT / "memory"
    folder = (v1 if v1.is_dir() else CGROUP_ROOT) / name
    folder.mkdir()
    try:
        if v1.is_dir():
            (folder / "memory.limit_in_bytes").write_text(str(limit_bytes))
        else:
            (folder / "memory.max").write_text(str(limit_bytes))
        yield folder
    finally:
        folder.rmdir()


def join_cgroup(folder: Path) -> None:
    """Put the calling process into the cgroup `folder` (run in a child before it execs)."""
    (folder / "cgroup.procs").write_text(str(os.getpid()))


def cgroup_peak(folder: Path) -> dict[str, int | None]:
    """The cgroup's peak usage and its count of hits of the limit (cgroup v1; `None` where v2 has no such file)."""

    def read(name: str) -> int | None:
        path = folder / name
        return int(path.read_text().split()[0]) if path.is_file() else None

    return {"max_usage": read("memory.max_usage_in_bytes") or read("memory.peak"), "failcnt": read("memory.failcnt")}


def evict_from_page_cache(paths) -> None:
    """Ask the kernel to drop the cached pages of these files (`posix_fadvise(DONTNEED)`), so that a process reading
    them next pays for them in its own cgroup (pages cached by another process are charged to that one's)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
