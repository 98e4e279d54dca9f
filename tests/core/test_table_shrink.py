"""The entry table shrinks when entries become fewer: the live entries move down
into its first slots (every key, vector, order and count unchanged) and its tail
and the index's go back to the OS; allocated_bytes and the process's resident
memory follow."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python

from embcache import CacheKey, SyncEmbeddingCache

ENTRY = 64  # bytes of an entry slot
CELL = 8  # bytes of an index cell


def vector(i: int) -> np.ndarray:
    return np.arange(4, dtype=np.float32) + np.float32(i)


@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
def test_removals_shrink_the_table_and_keep_every_entry(policy: str) -> None:
    n = 40_000
    c = SyncEmbeddingCache(n, None, 64, policy=policy)
    keys = [CacheKey(str(i), "m") for i in range(n + 40_000)]
    for i in range(n):
        c.put(keys[i], vector(i))
    full = c.get_cache_info().allocated_bytes
    survivors = sorted(random.Random(3).sample(range(n), 10_000))
    gone = sorted(set(range(n)) - set(survivors))
    for i in gone:
        assert c.remove(keys[i])
    c._check_invariants()
    c.put(keys[n], vector(n))  # a put finds the table three quarters unused
    c._check_invariants()
    shrunk = c.get_cache_info().allocated_bytes
    # at least the slots and cells of 28,000 of the 30,000 removed entries are given back
    assert full - shrunk >= 28_000 * ENTRY + 2 * 28_000 * CELL
    for i in survivors + [n]:
        got = c.get(keys[i])
        assert got is not None and np.array_equal(got, vector(i)), i
    for i in gone[::97]:
        assert c.get(keys[i]) is None
    c._check_invariants()
    assert len(c) == 10_001


def test_a_shrunk_lru_table_evicts_in_the_same_order() -> None:
    n = 40_000
    c = SyncEmbeddingCache(n, None, 64)
    keys = [CacheKey(str(i), "m") for i in range(2 * n)]
    for i in range(n):
        c.put(keys[i], vector(i))
    survivors = sorted(random.Random(5).sample(range(n), 10_000))
    for i in sorted(set(range(n)) - set(survivors)):
        c.remove(keys[i])
    before = c.get_cache_info().allocated_bytes
    # refill to the bound (the table shrinks on the first put, then grows again)
    for i in range(n, n + 30_000):
        c.put(keys[i], vector(i))
    assert len(c) == n
    assert c.get_cache_info().allocated_bytes <= before + 40_000 * (ENTRY + 4 * CELL)
    c._check_invariants()
    # ten more evict the ten least recent survivors, in insertion order
    for i in range(n + 30_000, n + 30_010):
        c.put(keys[i], vector(i))
    for i in survivors[:10]:
        assert c.get(keys[i]) is None, i
    for i in survivors[10:]:
        assert c.get(keys[i]) is not None, i
    c._check_invariants()


def test_larger_vectors_shrink_the_table_through_evictions() -> None:
    # 16 MiB of dim-4 entries, then dim-2048 vectors evict them: the table follows
    c = SyncEmbeddingCache(1_000_000, None, 16)
    keys = [CacheKey(str(i), "m") for i in range(160_000)]
    for i in range(150_000):
        c.put(keys[i], vector(i))
    big = np.ones(2048, np.float32)
    for i in range(150_000, 150_000 + 3_000):
        c.put(keys[i], big)
    info = c.get_cache_info()
    c._check_invariants()
    assert info.size < 2_100
    # the table of ~150,000 slots (9.6 MB) and its index do not stay beside the
    # large rows: what is allocated is the budget and the slack test_rss allows
    assert info.allocated_bytes <= info.memory_budget_bytes + 4 * 2**20


SHRINK = """
import numpy as np
from embcache import CacheKey, SyncEmbeddingCache
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
n = 200_000
keys = [CacheKey(str(i), "m") for i in range(n + 1)]
c = SyncEmbeddingCache(n + 1, None, 256)
v = np.ones(4, np.float32)
for k in keys[:n]:
    c.put(k, v)
full_rss, full = rss(), c.get_cache_info().allocated_bytes
for i in range(10_000, n):      # no slice: its 1.5 MB would stay in the heap
    c.remove(keys[i])
c.put(keys[n], v)
c._check_invariants()
print(full_rss - rss(), full - c.get_cache_info().allocated_bytes)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_a_shrunk_table_gives_its_pages_back(tmp_path: Path) -> None:
    out = run_python(["-c", SHRINK], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rss_drop, allocated_drop = map(int, out.stdout.split())
    # 190,000 slots and their cells, less the slots kept: ~14 MB
    assert allocated_drop >= 180_000 * (ENTRY + 2 * CELL)
    # what allocated_bytes says went back is gone from the process
    assert rss_drop >= allocated_drop - 2**20
