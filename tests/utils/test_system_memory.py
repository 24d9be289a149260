"""Memory this process holds, and giving freed memory back."""

from __future__ import annotations

import subprocess
import sys


_FREED_HEAP = """
import torch
from optimum_layerwise.utils.system_memory import release_freed_memory

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

big = torch.empty(64 * 2**20, dtype=torch.uint8); del big  # a large free: glibc raises its mmap threshold
kept = []
for index in range(200):  # 200 temporaries of 2 MiB, every other one kept for a while: a fragmented heap
    tensor = torch.ones(2**19)
    if index % 2 == 0:
        kept.append(tensor)
kept.clear()
before = rss()
release_freed_memory()
print(before - rss())
"""


def test_freed_heap_memory_is_given_back():
    result = subprocess.run([sys.executable, "-c", _FREED_HEAP], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 100 * 2**20  # most of the 200 MiB freed was still resident before the call
