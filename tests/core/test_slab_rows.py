"""Dense slab rows: a freed row is refilled (by the next vector, or by the slab's
last row), so the rows in use stay contiguous and the pages past them go back to
the OS; what allocated_bytes reports follows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, SyncEmbeddingCache

PAGE = 4096
# pages past the live rows a slab may keep (core/slab_rows.pxi TRIM_BYTES)
TRIM_MARGIN = 256 * 1024


def vector(i: int, dim: int) -> np.ndarray:
    return (np.arange(dim, dtype=np.float32) + np.float32(i)) * np.float32(0.5)


def test_every_vector_survives_removals_in_any_order() -> None:
    rng = random.Random(7)
    c = SyncEmbeddingCache(10_000, None, 64)
    dims = [3, 64, 385]
    keys = [CacheKey(str(i), "m") for i in range(3000)]
    live: dict[int, int] = {}
    for i, k in enumerate(keys):
        d = dims[i % 3]
        c.put(k, vector(i, d))
        live[i] = d
    order = list(live)
    rng.shuffle(order)
    for n, i in enumerate(order[:2000]):
        assert c.remove(keys[i])
        del live[i]
        if n % 250 == 0:
            c._check_invariants()
    # refill some rows, overwrite some in place, move some to another dimension
    for i in order[:300]:
        c.put(keys[i], vector(i + 1, 64))
        live[i] = 64
    for i in order[2000:2100]:
        c.put(keys[i], vector(i + 2, live[i]))
    c._check_invariants()
    for i, d in live.items():
        shift = 1 if i in order[:300] else 2 if i in order[2000:2100] else 0
        got = c.get(keys[i])
        assert got is not None and got.shape == (d,)
        np.testing.assert_array_equal(got, vector(i + shift, d))
    assert len(c) == len(live)


def test_a_full_cache_keeps_every_vector_exact_while_it_evicts() -> None:
    c = SyncEmbeddingCache(500, None, 64, dim=48)
    keys = [CacheKey(str(i), "m") for i in range(5000)]
    for i, k in enumerate(keys):
        c.put(k, vector(i, 48))
        if i % 7 == 0:   # a hit moves an old entry up, so victims come from all over the slab
            c.get(keys[i // 2])
    c._check_invariants()
    found = 0
    for i, k in enumerate(keys):
        got = c.get(k)
        if got is not None:
            found += 1
            np.testing.assert_array_equal(got, vector(i, 48))
    assert found == 500


@pytest.mark.parametrize("dim", [None, 768])
def test_a_slab_that_shrinks_gives_its_pages_back(dim: int | None) -> None:
    c = SyncEmbeddingCache(100_000, None, 64, dim=dim)
    keys = [CacheKey(str(i), "m") for i in range(12_000)]
    one = np.ones(768, np.float32)
    for k in keys:
        c.put(k, one)
    full = c.get_cache_info().allocated_bytes
    for k in keys[:11_000]:       # the oldest go: their rows are refilled from the tail
        c.remove(k)
    c._check_invariants()
    info = c.get_cache_info()
    rows = info.size * (768 * 4 + 4)
    tables = full - 12_000 * (768 * 4 + 4)          # what is not slab rows (and rounding)
    # a fixed dim uses huge pages: its slab is counted in 2 MiB steps
    step = 2 * 2**20 if dim else PAGE
    assert info.allocated_bytes <= tables + rows + TRIM_MARGIN + step
    assert full - info.allocated_bytes >= 11_000 * (768 * 4 + 4) - TRIM_MARGIN - 2 * step
    for k in keys[11_000:]:
        np.testing.assert_array_equal(c.get(k), one)


def test_a_dimension_whose_entries_all_went_costs_no_pages() -> None:
    c = SyncEmbeddingCache(100_000, None, 64)
    a = [CacheKey(f"a{i}", "m") for i in range(1000)]
    b = CacheKey("b", "m")
    for k in a:
        c.put(k, np.ones(384, np.float32))
    c.put(b, np.ones(16, np.float32))
    with_a = c.get_cache_info().allocated_bytes
    for k in a:
        c.remove(k)
    c.put(b, np.ones(16, np.float32))  # another slab is now the last used
    info = c.get_cache_info()
    assert with_a - info.allocated_bytes >= 1000 * (384 * 4 + 4) // PAGE * PAGE
    assert info.dims == (16,)
    c._check_invariants()


def test_the_per_entry_overhead_counts_the_row_owner() -> None:
    c = SyncEmbeddingCache(10, None, 1)
    c.put(CacheKey("x", "m"), np.ones(5, np.float32))
    info = c.get_cache_info()
    assert info.entry_overhead_bytes == ENTRY_OVERHEAD_BYTES == 64 + 4 * 8 + 4
    assert info.memory_usage_bytes == 5 * 4 + ENTRY_OVERHEAD_BYTES
