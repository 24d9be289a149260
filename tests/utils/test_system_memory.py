"""Memory this process holds, and giving freed memory back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from optimum_layerwise.utils.system_memory import meminfo_available, process_memory_limit


_FREED_HEAP = """
import ctypes
from optimum_layerwise.utils.system_memory import return_freed_memory

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt(-3, 64 * 2**20)  # M_MMAP_THRESHOLD: what glibc does by itself after a large free (up to 32 MiB)

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

chunks = [libc.malloc(2**20) for _ in range(200)]  # 200 MiB of 1 MiB temporaries, from the heap
for chunk in chunks:
    ctypes.memset(chunk, 1, 2**20)
pinned = libc.malloc(2**20)  # above them: freeing them cannot shrink the heap from its top
for chunk in chunks:
    libc.free(chunk)
before = rss()
return_freed_memory()
print(before - rss())
"""


def test_freed_heap_memory_is_given_back():
    result = subprocess.run([sys.executable, "-c", _FREED_HEAP], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 100 * 2**20  # most of the 200 MiB freed was resident before the call


def test_meminfo_available(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n")
    assert meminfo_available(meminfo) == 20_000_000 * 1024
    assert meminfo_available(tmp_path / "missing") is None


def fake_cgroup_tree(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc-cgroup").write_text(membership)
    for relative, content in files.items():
        path = tmp_path / "sys" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return tmp_path / "proc-cgroup", tmp_path / "sys"


def test_process_memory_limit_reads_meminfo_and_cgroups(tmp_path):
    status = tmp_path / "status"
    status.write_text("VmHWM:\t 900 kB\nVmRSS:\t 800 kB\nRssAnon:\t 600 kB\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n")
    none = tmp_path / "none"
    assert process_memory_limit(meminfo, none, none, status) == (20_000_000 + 800) * 1024  # available + own
    proc, root = fake_cgroup_tree(  # v1: the limit less the other processes' anonymous memory
        tmp_path / "v1",
        "9:pids:/\n4:memory:/job\n",
        {"memory/job/memory.limit_in_bytes": "4000000000\n", "memory/job/memory.stat": "cache 5\ntotal_rss 1614400\n"},
    )
    assert process_memory_limit(meminfo, proc, root, status) == 4_000_000_000 - (1_614_400 - 600 * 1024)
    proc, root = fake_cgroup_tree(
        tmp_path / "v2", "0::/job\n", {"job/memory.max": "2000000\n", "job/memory.stat": "anon 100\nfile 7\n"}
    )
    assert process_memory_limit(meminfo, proc, root, status) == 2_000_000  # its own anonymous memory is larger
    proc, root = fake_cgroup_tree(tmp_path / "unlimited", "0::/job\n", {"job/memory.max": "max\n"})
    assert process_memory_limit(none, proc, root, status) is None
