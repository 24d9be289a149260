"""Memory this process holds, and giving freed memory back."""

from __future__ import annotations

import subprocess
import sys


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
