"""The array get returns (core/row_arrays.h): an ordinary numpy array owned by
the caller, whose block numpy hands back to embcache's small pool when the array
goes; what the pool keeps stays bounded, across sizes, threads, resizes and a
fork, for the private and the shared cache."""

from __future__ import annotations

import copy
import gc
import os
import pickle
import queue
import random
import secrets
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from conftest import SANITIZED

from embcache import CacheKey, SharedEmbeddingCache, SyncEmbeddingCache

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import get_handler_name

PAGE = os.sysconf("SC_PAGE_SIZE")
DIMS = (1, 3, 64, 384, 768, 1024, 1536, 3072, 8192, 16384)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def vector(dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


@pytest.fixture(params=["private", "shared"])
def cache_of(request: pytest.FixtureRequest) -> Iterator[Callable[[int], Any]]:
    """A maker of a cache holding one vector of a given dim under key ('k', 'm')."""
    names: list[str] = []
    made: list[Any] = []

    def make(dim: int) -> Any:
        if request.param == "private":
            cache: Any = SyncEmbeddingCache(64, None, 8)
        else:
            names.append(f"embcache-test-{os.getpid()}-{secrets.token_hex(4)}")
            cache = SharedEmbeddingCache(names[-1], 64, None, 8, dim=dim)
        made.append(cache)
        cache.put(CacheKey("k", "m"), vector(dim, dim))
        return cache

    yield make
    for cache in made:
        if isinstance(cache, SharedEmbeddingCache):
            cache.close()
    for name in names:
        SharedEmbeddingCache.unlink(name)


def test_a_got_array_is_an_ordinary_owned_array(cache_of: Callable[[int], Any]) -> None:
    for dim in DIMS:
        cache = cache_of(dim)
        got = cache.get(CacheKey("k", "m"))
        assert got.dtype == np.float32 and got.shape == (dim,)
        assert got.flags.owndata and got.base is None
        assert got.flags.writeable and got.flags.c_contiguous and got.flags.aligned
        assert get_handler_name(got) == "embcache_rows"
        assert np.array_equal(got, vector(dim, dim))
        got[:] = -1.0  # the caller's own: the cache's row is untouched
        assert np.array_equal(cache.get(CacheKey("k", "m")), vector(dim, dim))


def _traced(domain_of: int | None = None) -> dict[tuple[int, int], int]:
    """(domain, size) -> how many blocks tracemalloc traces now."""
    counts: dict[tuple[int, int], int] = {}
    for trace in tracemalloc.take_snapshot().traces:
        if domain_of is None or trace.domain == domain_of:
            key = (trace.domain, trace.size)
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_tracemalloc_sees_a_got_array_as_it_sees_numpys_own(
    cache_of: Callable[[int], Any],
) -> None:
    cache = cache_of(12345)  # a size nothing else here allocates
    tracemalloc.start()
    try:
        mine = np.empty(12345, dtype=np.float32)
        numpy_domain = {d for (d, size) in _traced() if size == mine.nbytes}
        assert len(numpy_domain) == 1 and 0 not in numpy_domain  # numpy's own domain
        (domain,) = numpy_domain
        del mine
        before = _traced(domain).get((domain, 12345 * 4), 0)
        got = [cache.get(CacheKey("k", "m")) for _ in range(3)]
        assert _traced(domain).get((domain, 12345 * 4), 0) == before + 3
        resized = got.pop()
        resized.resize((777,), refcheck=False)  # numpy's resize re-tracks at the new size
        assert _traced(domain).get((domain, 12345 * 4), 0) == before + 2
        assert _traced(domain).get((domain, 777 * 4), 0) >= 1
        del got[0]
        assert _traced(domain).get((domain, 12345 * 4), 0) == before + 1
        got.clear()
        del resized
        assert _traced(domain).get((domain, 12345 * 4), 0) == before
    finally:
        tracemalloc.stop()


@pytest.mark.skipif(
    SANITIZED or not getattr(sys, "_is_gil_enabled", lambda: True)(),
    reason="no pool in the sanitizer build (ASan sees every free) or without the GIL",
)
def test_a_freed_block_serves_the_next_array_of_its_size(cache_of: Callable[[int], Any]) -> None:
    cache = cache_of(768)
    first = cache.get(CacheKey("k", "m"))
    address = first.ctypes.data
    del first
    again = cache.get(CacheKey("k", "m"))
    assert again.ctypes.data == address
    assert np.array_equal(again, vector(768, 768))
    held = [cache.get(CacheKey("k", "m")) for _ in range(20)]  # more than the pool keeps
    assert len({a.ctypes.data for a in held + [again]}) == 21
    assert all(np.array_equal(a, again) for a in held)


def test_arrays_outlive_their_cache_and_survive_copies_and_pickles() -> None:
    cache = SyncEmbeddingCache(64, None, 8)
    cache.put(CacheKey("k", "m"), vector(384, 1))
    got = [cache.get(CacheKey("k", "m")) for _ in range(4)]
    del cache
    gc.collect()
    for a in got:
        assert np.array_equal(a, vector(384, 1))
        assert np.array_equal(pickle.loads(pickle.dumps(a)), a)
        assert np.array_equal(copy.deepcopy(a), a)
        view = a[::2]
        del a
        assert np.array_equal(view, vector(384, 1)[::2])


def test_a_resized_array_is_freed_at_its_new_size() -> None:
    cache = SyncEmbeddingCache(64, None, 8)
    cache.put(CacheKey("k", "m"), vector(768, 2))
    for new in (10, 768, 5000, 1, 768 * 3):
        got = cache.get(CacheKey("k", "m"))
        got.resize((new,), refcheck=False)  # numpy's resize reallocates through the handler
        assert got.shape == (new,) and get_handler_name(got) == "embcache_rows"
        keep = min(new, 768)
        assert np.array_equal(got[:keep], vector(768, 2)[:keep])
        del got
    for _ in range(50):  # every block freed at any of those sizes serves or is freed
        assert np.array_equal(cache.get(CacheKey("k", "m")), vector(768, 2))


def test_arrays_made_in_one_thread_and_freed_in_another() -> None:
    cache = SyncEmbeddingCache(256, None, 32)
    keys = {dim: CacheKey(f"k{dim}", "m") for dim in DIMS[:8]}
    for dim, key in keys.items():
        cache.put(key, vector(dim, dim))
    handoff: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=64)
    wrong: list[int] = []

    def make(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(4000):
            dim = rng.choice(list(keys))
            handoff.put(cache.get(keys[dim]))

    def drop() -> None:
        while (a := handoff.get()) is not None:
            if not np.array_equal(a, vector(len(a), len(a))):
                wrong.append(len(a))

    makers = [threading.Thread(target=make, args=(s,)) for s in range(3)]
    droppers = [threading.Thread(target=drop) for _ in range(2)]
    for t in makers + droppers:
        t.start()
    for t in makers:
        t.join()
    for _ in droppers:
        handoff.put(None)
    for t in droppers:
        t.join()
    assert wrong == []


@pytest.mark.slow
def test_rss_flat_over_many_gets_of_mixed_sizes_held_and_freed_out_of_order() -> None:
    cache = SyncEmbeddingCache(64, None, 64)
    keys = {dim: CacheKey(f"k{dim}", "m") for dim in DIMS}
    for dim, key in keys.items():
        cache.put(key, vector(dim, dim))
    rng = random.Random(7)
    order = [rng.choice(DIMS) for _ in range(1000)]

    def churn(rounds: int) -> None:
        held: list[np.ndarray] = []
        for _ in range(rounds):
            for dim in order:
                held.append(cache.get(keys[dim]))
                if len(held) > 12:
                    held.pop(rng.randrange(len(held)))
        held.clear()

    churn(20)
    gc.collect()
    before = rss_bytes()
    churn(200)  # 200,000 arrays
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 2**20, f"RSS grew by {growth} bytes over 200,000 arrays"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_uses_and_frees_arrays_of_the_parents_pool() -> None:
    cache = SyncEmbeddingCache(64, None, 8)
    cache.put(CacheKey("k", "m"), vector(768, 3))
    for _ in range(10):  # the pool holds blocks when the child starts
        cache.get(CacheKey("k", "m"))
    held = cache.get(CacheKey("k", "m"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        ok = np.array_equal(held, vector(768, 3))
        del held
        for _ in range(1000):
            ok = ok and np.array_equal(cache.get(CacheKey("k", "m")), vector(768, 3))
        sys.stdout.flush()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert np.array_equal(held, vector(768, 3))
