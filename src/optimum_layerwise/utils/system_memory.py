"""How much memory this process holds and may use: its resident set, the machine's available memory, a cgroup limit.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
import sys
from pathlib import Path


_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < _UNLIMITED else None


def meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """`MemAvailable` of `/proc/meminfo` in bytes (`None` when unreadable)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_memory(proc_cgroup: Path, root: Path) -> tuple[int, int] | None:
    """The memory limit of this process's cgroup and the anonymous memory charged to it (v1 `memory` controller or
    v2), `None` without a limit."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if "memory" in controllers.split(","):  # v1
            folder, limit_name, anon_name = root / "memory" / relative, "memory.limit_in_bytes", "total_rss"
        elif controllers == "":  # v2 unified hierarchy
            folder, limit_name, anon_name = root / relative, "memory.max", "anon"
        else:
            continue
        limit = _read_int(folder / limit_name)
        if limit is None:
            continue
        try:
            stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
            anon = int(stat.get(anon_name, 0))
        except (OSError, ValueError):
            anon = 0
        return limit, anon
    return None


def resident_bytes(status: Path = Path("/proc/self/status")) -> int:
    """This process's resident memory now (`VmRSS`; 0 when unreadable)."""
    return _status_field(status, "VmRSS") or 0


def _status_field(status: Path, name: str) -> int | None:
    try:
        for line in status.read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_memory_limit(
    meminfo: Path = Path("/proc/meminfo"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    root: Path = Path("/sys/fs/cgroup"),
    status: Path = Path("/proc/self/status"),
) -> int | None:
    """The resident memory this process may reach in all (what it holds now included): the machine's available
    memory plus its own resident set, and under a cgroup limit at most that limit less the anonymous memory of the
    other processes charged to it (page cache is reclaimed before anything is killed). `None` when neither is known.
    """
    own = resident_bytes(status)
    own_anon = _status_field(status, "RssAnon") or 0
    known = []
    available = meminfo_available(meminfo)
    if available is not None:
        known.append(available + own)
    cgroup = _cgroup_memory(proc_cgroup, root)
    if cgroup is not None:
        limit, anon = cgroup
        known.append(limit - max(0, anon - own_anon))
    return min(known) if known else None


def peak_resident_bytes(status: Path = Path("/proc/self/status")) -> int:
    """The largest resident memory of this process so far: `VmHWM` on Linux, else `ru_maxrss`."""
    peak = _status_field(status, "VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return library if library is not None and hasattr(library, "malloc_trim") else None


def return_freed_memory() -> None:
    """Hand the memory this process has freed back to the system (glibc's `malloc_trim`; a no-op elsewhere).

    glibc raises its mmap threshold after the first large free, so later temporaries of a few MB come from the heap,
    and freed heap memory stays resident: the peak then grows with the work done. Offloaded layers dropped after their
    forward call left part of their weights behind that way, and quantizing SmolLM2-135M in float32 on load peaked at
    2.06x the weights' bytes with 667 MB of freed per-layer temporaries, against 1.00x with them returned once per
    layer (`bench/quantize_load.py`).
    """
    library = _glibc()
    if library is not None:
        library.malloc_trim(0)


# glibc's `mallopt` parameter, and its default value (the threshold glibc starts from before raising it)
M_MMAP_THRESHOLD = -3
DEFAULT_MMAP_THRESHOLD = 128 * 1024


def return_large_blocks_when_freed(threshold: int = DEFAULT_MMAP_THRESHOLD) -> None:
    """From now on, give every allocation of `threshold` bytes or more its own mapping, returned to the system as soon
    as it is freed (glibc's `mallopt(M_MMAP_THRESHOLD)`, which also stops glibc from raising the threshold; a no-op
    elsewhere). This is process-wide and lasts until the process ends.

    Layer-by-layer jobs call it before loading: transformers reads each offloaded tensor of the checkpoint once while
    it loads, and with the raised threshold the freed copies stayed in the heap, so that the peak grew by about one
    decoder layer's bytes per layer (a 16-layer test model with 3.9 MB layers: 472 MB after loading against 415 MB
    with 4 layers; 411 and 399 MB with this).
    """
    library = _glibc()
    if library is not None and hasattr(library, "mallopt"):
        library.mallopt(M_MMAP_THRESHOLD, threshold)
