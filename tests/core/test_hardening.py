"""Regression tests for defects a hostile or unlucky user hit: memory committed
before use, a put that stalls every other thread, limits the messages promise."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import key, run_python
from test_leak import rss_bytes

from embcache import (
    ArgumentTypeError,
    ArgumentValueError,
    DimensionMismatchError,
    SyncEmbeddingCache,
)


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


WALK_UNDER_GC = """
import gc
from embcache import CacheKey, SyncEmbeddingCache
cache = SyncEmbeddingCache(5000, None, 64)
keys = [CacheKey(str(i), "m") for i in range(5000)]
for k in keys:
    cache.put(k, [1.0, 2.0, 3.0])
calls = []

class Finalizer:
    def __init__(self):
        self.me = self  # a cycle: only the garbage collector frees it
    def __del__(self):
        calls.append(cache.get(keys[0]))  # re-enters the cache from a finalizer

gc.set_threshold(1)
for _ in range(50):
    for _ in range(20):
        Finalizer()
    cache._check_invariants()
gc.set_threshold(700)
gc.collect()
print("ok", len(calls) > 0)
"""


def test_invariant_walk_builds_nothing_a_finalizer_could_deadlock_on(tmp_path: Path) -> None:
    # The walker once built Python objects under the cache lock: a collection it
    # triggered ran a finalizer that called the cache, which waited for the lock
    # its own thread held, forever.
    try:
        out = run_python(["-c", WALK_UNDER_GC], cwd=tmp_path, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the invariant walk deadlocked with a finalizer that uses the cache")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "True"]


def test_sync_get_or_compute_takes_a_timeout() -> None:
    from embcache import FlightTimeoutError

    c = SyncEmbeddingCache(10, None, 1)
    release = threading.Event()

    def slow(keys: list) -> np.ndarray:
        release.wait(30)
        return np.ones((len(keys), 3))

    owner = threading.Thread(target=lambda: c.get_or_compute([key(1)], slow))
    owner.start()
    try:
        deadline = time.monotonic() + 10
        while c.flights.in_flight() == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        with pytest.raises(FlightTimeoutError) as e:
            c.get_or_compute([key(1)], slow, timeout=0.05)
        assert isinstance(e.value, TimeoutError)
    finally:
        release.set()
        owner.join()
    assert c.get(key(1)) is not None  # the owner's flight went on and stored its rows
    c._check_invariants()


@pytest.mark.parametrize("dim", [1, 4, 768, 2000])
def test_allocated_bytes_of_a_one_entry_cache_is_the_budget_plus_a_page_and_288(dim: int) -> None:
    from embcache import ENTRY_OVERHEAD_BYTES

    c = SyncEmbeddingCache(1, None, (dim * 4 + ENTRY_OVERHEAD_BYTES) / 2**20, dim=dim)
    c.put(key(1), np.ones(dim))
    info = c.get_cache_info()
    assert info.memory_usage_bytes == info.memory_budget_bytes
    # the written row is resident as whole pages; the smallest index and slab table
    assert info.allocated_bytes <= info.memory_budget_bytes + os.sysconf("SC_PAGESIZE") + 288


def test_a_wrong_dimension_is_rejected_before_the_values_are_scanned() -> None:
    # found by fuzzing: 2**31 broadcast values took seconds to be scanned first
    c = SyncEmbeddingCache(6, None, 0.01, dim=3)
    huge = np.broadcast_to(np.float32(0.5), (2**31 + 3,))
    start = time.perf_counter()
    with pytest.raises(DimensionMismatchError):
        c.put(key(1), huge)
    with pytest.raises(DimensionMismatchError):
        c.put_many([key(1)], huge[: 2**20].reshape(1, -1))
    assert time.perf_counter() - start < 0.5
    assert len(c) == 0


def test_out_must_be_a_plain_ndarray() -> None:
    import warnings

    c = SyncEmbeddingCache(6, None, 0.01, dim=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        m = np.matrix(np.zeros((1, 3), np.float32))
    with pytest.raises(ArgumentTypeError, match="not a subclass"):
        c.get_many([key(1)], out=m)
    with pytest.raises(ArgumentTypeError, match="not a subclass"):
        c.get_batch([key(1)], out=np.ma.masked_array(np.zeros((1, 3), np.float32)))
