"""How much memory this process may still use: the machine's available memory, or less under a cgroup limit.

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


def cgroup_headroom(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under the memory limit of this process's cgroup (v1 `memory` controller or v2), `None` without a
    limit."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if "memory" in controllers.split(","):  # v1
            folder = root / "memory" / relative
            limit = _read_int(folder / "memory.limit_in_bytes")
            usage = _read_int(folder / "memory.usage_in_bytes")
        elif controllers == "":  # v2 unified hierarchy
            folder = root / relative
            limit, usage = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
        else:
            continue
        if limit is not None:
            return max(0, limit - (usage or 0))
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate: the smaller of the machine's available memory and the headroom under
    its cgroup's memory limit (`None` when neither can be read)."""
    known = [value for value in (meminfo_available(), cgroup_headroom()) if value is not None]
    return min(known) if known else None


def peak_resident_bytes(status: Path = Path("/proc/self/status")) -> int:
    """The largest resident memory of this process so far: `VmHWM` on Linux, else `ru_maxrss`."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
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
