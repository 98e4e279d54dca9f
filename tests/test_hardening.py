"""Regression tests for defects a hostile or unlucky user hit: memory committed
before use, a put that stalls every other thread, limits the messages promise."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import key
from test_leak import rss_bytes

from embcache import ArgumentValueError, SyncEmbeddingCache


def test_huge_bounds_with_a_fixed_dim_cost_nothing_up_front() -> None:
    # The entry table and index once were sized for max_entries at construction:
    # 10**8 entries took 17.5 s and 6.6 GiB while the cache was empty.
    before = rss_bytes()
    start = time.perf_counter()
    c = SyncEmbeddingCache(10**8, None, 10**7, dim=768)
    elapsed = time.perf_counter() - start
    grown = rss_bytes() - before
    assert elapsed < 2.0, f"construction took {elapsed:.1f} s"
    assert grown < 64 * 2**20, f"an empty cache made RSS grow by {grown / 2**20:.0f} MiB"
    info = c.get_cache_info()
    assert info.allocated_bytes < 2**20
    for i in range(1000):  # and it fills as any cache does
        c.put(key(i), np.full(768, i, np.float32))
    assert len(c) == 1000 and c.get(key(999))[0] == 999
    c._check_invariants()


@pytest.mark.parametrize("mb", [2**42, 2.0**42, 2**50])
def test_max_memory_mb_from_2_to_the_42_is_rejected(mb: float) -> None:
    with pytest.raises(ArgumentValueError, match="below 2\\*\\*42"):
        SyncEmbeddingCache(10, None, mb)
    SyncEmbeddingCache(10, None, 2.0**42 - 1)


def test_a_long_put_lets_other_threads_run() -> None:
    # put() once held the GIL for its whole check and copy (a 64 MB vector
    # stalled every other thread); get and get_many already released it.
    dim = 32 * 2**20  # 128 MiB of float32: a copy of tens of milliseconds
    c = SyncEmbeddingCache(2, None, 2 * (dim * 4 + 4096) / 2**20)
    vector = np.ones(dim, np.float32)
    stamps: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            stamps.append(time.perf_counter())

    t = threading.Thread(target=ticker)
    t.start()
    try:
        time.sleep(0.01)
        window = []
        for i in range(3):
            begin = time.perf_counter()
            c.put(key(i), vector)
            window.append((begin, time.perf_counter()))
    finally:
        stop.set()
        t.join()
    inside = 0
    for begin, end in window:
        margin = (end - begin) / 4  # only the middle half, well inside the C call
        inside += sum(begin + margin < s < end - margin for s in stamps)
    assert inside > 0, "no other thread ran while put copied 128 MiB"
    assert np.array_equal(c.get(key(2))[:8], np.ones(8, np.float32))
