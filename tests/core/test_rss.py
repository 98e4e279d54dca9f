"""Resident memory against the budget, measured in a fresh process per workload
and storage: what get_cache_info() reports is what the process holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import run_python

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm"),
]

BUDGET_MB = 32
# beyond the budget: a page per slab in use, the tables' slack, the interpreter's noise
SLACK = 4 * 2**20

WORKLOAD = """
import sys, numpy as np
from embcache import CacheKey, SyncEmbeddingCache, ENTRY_OVERHEAD_BYTES
from embcache._core import row_bytes
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
work, mb, storage = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dims = {"one": [768], "rotating": [384, 768, 1536], "tiny": list(range(1, 201)),
        "phased": [384, 768, 1536, 1024, 256]}[work]
vec = {d: np.ones(d, np.float32) for d in dims}
keys = [CacheKey(str(i), "m") for i in range(120_000)]
budget = mb * 2**20
base = rss()
c = SyncEmbeddingCache(1_000_000, None, mb, storage=storage)
peak = 0
if work == "tiny":
    for i, d in enumerate(dims):
        c.put(keys[i], vec[d])
else:
    phases = [dims] if work != "phased" else [[d] for d in dims]
    k = 0
    for phase in phases:
        size = sum(row_bytes(storage, d) for d in phase) / len(phase) + ENTRY_OVERHEAD_BYTES
        for i in range(int(2 * budget / len(phases) / size) + 1):
            c.put(keys[k % len(keys)], vec[phase[i % len(phase)]])
            k += 1
            if i % 2000 == 0:
                peak = max(peak, rss() - base)
peak = max(peak, rss() - base)
info = c.get_cache_info()
c._check_invariants()
print(peak, info.allocated_bytes, info.memory_usage_bytes, info.memory_budget_bytes)
"""


STORAGES = ["float32", "float16", "bfloat16", "int8"]


def measure(tmp_path: Path, work: str, storage: str) -> tuple[int, int, int, int]:
    out = run_python(["-c", WORKLOAD, work, str(BUDGET_MB), storage], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    peak, allocated, used, budget = map(int, out.stdout.split())
    return peak, allocated, used, budget


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("work", ["one", "rotating", "tiny"])
def test_resident_memory_stays_within_the_budget(tmp_path: Path, work: str, storage: str) -> None:
    peak, allocated, used, budget = measure(tmp_path, work, storage)
    assert used <= budget
    assert peak <= budget + SLACK, f"{work}: RSS grew {peak / 2**20:.1f} MiB for {BUDGET_MB} MiB"
    assert allocated <= budget + SLACK
    assert abs(peak - allocated) <= SLACK, "allocated_bytes is not what is resident"


@pytest.mark.parametrize("storage", STORAGES)
def test_resident_memory_of_phased_dimensions_stays_within_the_budget(
    tmp_path: Path, storage: str
) -> None:
    peak, allocated, used, budget = measure(tmp_path, "phased", storage)
    assert peak <= budget + SLACK, f"phased: RSS grew {peak / 2**20:.1f} MiB for {BUDGET_MB} MiB"
