"""fork(): the child gets a usable cache, whatever other threads were doing.

Gunicorn --preload, Celery prefork and multiprocessing's fork start method all
fork a process whose threads may be inside a cache operation (long copies run
without the GIL) or inside get_or_compute; the child must neither inherit a held
lock nor wait forever for a compute that only the parent is running."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from conftest import key
from forking import CHILD_SECONDS, fork_and_run

from embcache import SyncEmbeddingCache

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns that forking a multi-threaded process may deadlock the
    # child: exactly what these tests show embcache's caches survive
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def test_fork_while_other_threads_copy_without_the_gil() -> None:
    dim = 4096
    c = SyncEmbeddingCache(512, None, 64, dim=dim)
    keys = [key(i) for i in range(256)]
    c.put_many(keys, np.ones((256, dim), np.float32))  # get_many of these: 4 MiB, GIL-free
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            c.get_many(keys)
            c.put_many(keys, np.ones((256, dim), np.float32))

    workers = [threading.Thread(target=busy) for _ in range(2)]
    for w in workers:
        w.start()

    def child() -> bool:
        c.put(key("child"), np.full(dim, 2.0, np.float32))
        matrix, found = c.get_many(keys[:8])
        c._check_invariants()
        return bool(found.all()) and c.get(key("child"))[0] == 2.0

    try:
        for _ in range(10):
            time.sleep(0.01)
            assert fork_and_run(child) == 0
    finally:
        stop.set()
        for w in workers:
            w.join()
    c._check_invariants()


def test_child_recomputes_keys_the_parent_was_computing() -> None:
    c = SyncEmbeddingCache(16, None, 1)
    started, release = threading.Event(), threading.Event()

    def slow(missing: list) -> np.ndarray:
        started.set()
        release.wait(30)
        return np.ones((len(missing), 3))

    owner = threading.Thread(target=lambda: c.get_or_compute([key(1)], slow))
    owner.start()
    assert started.wait(10)

    def child() -> bool:
        rows = c.get_or_compute([key(1)], lambda missing: np.full((len(missing), 3), 7.0))
        return float(rows[0, 0]) == 7.0 and c.flights.in_flight() == 0

    try:
        assert fork_and_run(child) == 0
    finally:
        release.set()
        owner.join()
    assert c.get(key(1))[0] == 1.0  # the parent's flight went on undisturbed


_INHERITED: dict[str, SyncEmbeddingCache] = {}


def _child_reads(i: int) -> float:
    cache = _INHERITED["cache"]
    cache.put(key(("child", i)), np.full(8, -1.0, np.float32))
    return float(cache.get(key(i))[0])


def test_multiprocessing_fork_children_use_the_inherited_cache() -> None:
    import multiprocessing as mp

    c = _INHERITED["cache"] = SyncEmbeddingCache(1000, None, 16, dim=8)
    for i in range(100):
        c.put(key(i), np.full(8, i, np.float32))
    big = SyncEmbeddingCache(300, None, 64, dim=4096)
    big_keys = [key(i) for i in range(256)]
    big.put_many(big_keys, np.ones((256, 4096), np.float32))
    stop = threading.Event()

    def copy_without_the_gil() -> None:
        while not stop.is_set():
            big.get_many(big_keys)

    busy = threading.Thread(target=copy_without_the_gil)
    busy.start()
    try:
        ctx = mp.get_context("fork")
        with ctx.Pool(2) as pool:
            result = pool.map_async(_child_reads, range(0, 100, 10), chunksize=1)
            got = result.get(timeout=CHILD_SECONDS)
    finally:
        stop.set()
        busy.join()
        del _INHERITED["cache"]
    assert got == [float(i) for i in range(0, 100, 10)]
