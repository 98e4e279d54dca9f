"""The policy= keyword and W-TinyLFU: argument checks, reporting,
exact accounting of the sketch, scan and loop resistance, TTL still first,
mixed-dimension admission, clear/remove, threads, and the hit-rate tooling.
Exact eviction order is the state machine's job (test_model.py with
tests/model_tinylfu.py)."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from conftest import MIB, FakeClock, in_threads, key, vec

from embcache import (
    ENTRY_OVERHEAD_BYTES,
    ArgumentTypeError,
    ArgumentValueError,
    EmbeddingCache,
    EntryTooLargeError,
    SyncEmbeddingCache,
)

# -- the keyword ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 1, b"lru", ["lru"], 1.5, True])
def test_policy_of_wrong_type_is_rejected(bad: object) -> None:
    with pytest.raises(ArgumentTypeError, match="policy must be a str") as err:
        SyncEmbeddingCache(10, policy=bad)
    assert isinstance(err.value, TypeError)
    with pytest.raises(ArgumentTypeError):
        EmbeddingCache(10, policy=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "LRU", "TinyLFU", "tinylfu ", "lfu", "w-tinylfu"])
def test_unknown_policy_is_rejected(bad: str) -> None:
    with pytest.raises(ArgumentValueError, match="'lru', 'tinylfu'") as err:
        SyncEmbeddingCache(10, policy=bad)
    assert isinstance(err.value, ValueError)
    with pytest.raises(ArgumentValueError):
        EmbeddingCache(10, policy=bad)


def test_policy_is_keyword_only_and_lru_by_default() -> None:
    with pytest.raises(TypeError):
        SyncEmbeddingCache(10, None, 1.0, None, None, "tinylfu")  # type: ignore[misc]
    cache = SyncEmbeddingCache(10)
    assert cache.policy == "lru"
    info = cache.get_cache_info()
    assert (info.policy, info.admission_rejections, info.policy_bytes) == ("lru", 0, 0)
    assert info.entry_overhead_bytes == ENTRY_OVERHEAD_BYTES
    assert "policy='lru'" in repr(cache)


def test_facade_passes_the_policy_through() -> None:
    cache = EmbeddingCache(50, dim=4, policy="tinylfu")
    assert cache.sync.policy == "tinylfu"

    async def go() -> None:
        await cache.put(key(1), vec(1))
        assert (await cache.get(key(1))) is not None
        info = await cache.get_cache_info()
        assert info.policy == "tinylfu"

    asyncio.run(go())


def test_cache_info_keeps_its_fields_and_adds_the_policy_after_them() -> None:
    names = [f.name for f in dataclasses.fields(SyncEmbeddingCache(5).get_cache_info())]
    at = names.index("reserved_bytes")
    assert names[at + 1:at + 4] == ["policy", "admission_rejections", "policy_bytes"]
    assert names[:3] == ["size", "max_entries", "memory_usage_bytes"]


# -- accounting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_entries", "mb", "dim", "sketch"),
    [
        (100_000, 512.0, None, 131072 * 8),     # the defaults: one word per entry, 1 MiB
        (2_000, 64.0, 768, 2048 * 8),
        (5, 1.0, None, 64),                     # never below one 64-byte block
        (10, 1.0, None, 128),                   # a power of two >= max_entries
        (1_000_000, 1.0, 4, 16384 * 8),         # at most an eighth of the budget
    ],
)
def test_sketch_bytes(max_entries: int, mb: float, dim: int | None, sketch: int) -> None:
    cache = SyncEmbeddingCache(max_entries, None, mb, dim=dim, policy="tinylfu")
    info = cache.get_cache_info()
    assert info.policy_bytes == sketch
    assert info.memory_usage_bytes == sketch
    assert info.entry_overhead_bytes == ENTRY_OVERHEAD_BYTES + 4
    lru = SyncEmbeddingCache(max_entries, None, mb, dim=dim).get_cache_info()
    assert info.allocated_bytes == lru.allocated_bytes + sketch


def test_accounting_is_exact_with_mixed_dims() -> None:
    cache = SyncEmbeddingCache(1000, None, 1.0, policy="tinylfu")
    dims = [3, 64, 300]
    for i in range(400):
        cache.put(key(i), vec(i, dims[i % 3]))
        if i % 3 == 0:
            cache.get(key(i // 2))
    info = cache.get_cache_info()
    cache._check_invariants()
    held = [cache.get(key(i)) for i in range(400)]
    payload = sum(len(v) * 4 + info.entry_overhead_bytes for v in held if v is not None)
    # the gets above may promote but never evict
    assert cache.get_cache_info().memory_usage_bytes == info.policy_bytes + payload
    assert info.memory_usage_bytes <= info.memory_budget_bytes
    # the slot words grow with the entry table and are allocated, not just accounted
    lru = SyncEmbeddingCache(1000, None, 1.0)
    for i in range(400):
        lru.put(key(i), vec(i, dims[i % 3]))
    assert info.allocated_bytes > lru.get_cache_info().allocated_bytes + info.policy_bytes


def test_budget_too_small_for_sketch_and_entry() -> None:
    budget = ENTRY_OVERHEAD_BYTES + 4 * 16 + 4 + 64      # exactly one dim-16 entry + sketch
    SyncEmbeddingCache(1, None, budget / MIB, dim=16, policy="tinylfu")
    with pytest.raises(EntryTooLargeError, match="policy's 64 bytes"):
        SyncEmbeddingCache(1, None, (budget - 1) / MIB, dim=16, policy="tinylfu")
    cache = SyncEmbeddingCache(1, None, budget / MIB, policy="tinylfu")
    cache.put(key(1), vec(1, 16))
    with pytest.raises(EntryTooLargeError):
        cache.put(key(2), vec(2, 17))
    assert key(1) in cache and len(cache) == 1


# -- behaviour ------------------------------------------------------------------------


def test_hot_entries_survive_a_scan() -> None:
    results = {}
    for policy in ("lru", "tinylfu"):
        cache = SyncEmbeddingCache(100, dim=4, policy=policy)
        hot = [key(f"hot-{i}") for i in range(50)]
        for _ in range(5):
            for k in hot:
                if cache.get(k) is None:
                    cache.put(k, vec(1))
        for i in range(1000):                  # a re-indexing pass of one-off chunks
            k = key(f"scan-{i}")
            if cache.get(k) is None:
                cache.put(k, vec(2))
        results[policy] = sum(k in cache for k in hot)
        cache._check_invariants()
    assert results["lru"] == 0
    assert results["tinylfu"] >= 45


def test_a_put_always_stores_and_rejections_are_counted() -> None:
    cache = SyncEmbeddingCache(20, dim=4, policy="tinylfu")
    for _ in range(4):
        for i in range(20):
            if cache.get(key(i)) is None:
                cache.put(key(i), vec(i))
    for i in range(100, 400):
        assert cache.put(key(i), vec(i)) is None     # never raises, returns nothing
        assert key(i) in cache                       # the new key is in the window
    info = cache.get_cache_info()
    assert info.size == 20
    assert info.admission_rejections > 0
    assert info.evictions >= info.admission_rejections
    # the frequently read keys held the main region against the cold candidates
    assert sum(key(i) in cache for i in range(20)) >= 15


def test_ttl_stays_expired_first() -> None:
    clock = FakeClock()
    cache = SyncEmbeddingCache(10, 5.0, dim=4, clock=clock, policy="tinylfu")
    cache.put(key("old"), vec(0))
    clock.advance(3.0)
    for i in range(9):
        cache.put(key(i), vec(i))
        cache.get(key(i))
    clock.advance(2.5)                    # key("old") has expired, the rest have not
    cache.put(key("new"), vec(1))
    info = cache.get_cache_info()
    assert (info.expirations, info.evictions) == (1, 0)
    assert all(key(i) in cache for i in range(9)) and key("new") in cache
    cache._check_invariants()


def test_a_big_cold_candidate_does_not_displace_hot_small_entries() -> None:
    # memory-bound, mixed dims: a stream of large one-off vectors must not flush
    # many small hot ones, each of which it would displace
    budget = 40 * (ENTRY_OVERHEAD_BYTES + 4 + 16) + 8 * 64 * 4 + 4096
    cache = SyncEmbeddingCache(10_000, None, budget / MIB, policy="tinylfu")
    hot = [key(f"hot-{i}") for i in range(30)]
    for _ in range(6):
        for k in hot:
            if cache.get(k) is None:
                cache.put(k, vec(1, 4))
    for i in range(200):
        k = key(f"big-{i}")
        if cache.get(k) is None:
            cache.put(k, vec(2, 512))
            assert k in cache
        cache._check_invariants()
    assert sum(k in cache for k in hot) >= 25
    info = cache.get_cache_info()
    assert info.memory_usage_bytes <= info.memory_budget_bytes
    assert info.admission_rejections > 0


def test_remove_clear_len_contains_under_tinylfu() -> None:
    cache = SyncEmbeddingCache(50, dim=4, policy="tinylfu")
    for _ in range(3):
        for i in range(80):
            if cache.get(key(i)) is None:
                cache.put(key(i), vec(i))
    live = [i for i in range(80) if key(i) in cache]
    assert len(live) == len(cache) == 50
    for i in live[::3]:                  # from every segment
        assert cache.remove(key(i)) is True
        assert key(i) not in cache
        assert cache.remove(key(i)) is False
        cache._check_invariants()
    cache.clear()
    info = cache.get_cache_info()
    assert len(cache) == 0 and info.memory_usage_bytes == info.policy_bytes
    cache._check_invariants()
    for i in range(60):
        cache.put(key(i), vec(i))
    assert len(cache) == 50
    cache._check_invariants()


def test_batches_under_tinylfu() -> None:
    cache = SyncEmbeddingCache(64, dim=8, policy="tinylfu")
    keys = [key(i) for i in range(100)]
    cache.put_many(keys, np.arange(800, dtype=np.float64).reshape(100, 8))
    assert len(cache) == 64
    matrix, found = cache.get_many(keys)
    assert found.sum() == 64
    for i in np.flatnonzero(found):
        assert matrix[i].tolist() == list(range(8 * i, 8 * i + 8))
    got = cache.get_or_compute(keys[:10], lambda ks: np.ones((len(ks), 8)))
    assert got.shape == (10, 8)
    cache._check_invariants()


def test_threads_hammering_a_tinylfu_cache() -> None:
    cache = SyncEmbeddingCache(200, None, 1.0, policy="tinylfu")

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for step in range(5000):
            k = key(int(rng.zipf(1.3)) % 600)
            r = rng.random()
            if r < 0.5:
                if cache.get(k) is None:
                    cache.put(k, vec(step, 4 + seed))
            elif r < 0.7:
                cache.put_many([k, key(step % 50)], np.ones((2, 4 + seed)))
            elif r < 0.8:
                cache.remove(k)
            else:
                cache.get_many([k])

    results = in_threads(*[lambda s=s: work(s) for s in range(4)])
    assert all(r is None for r in results), results
    cache._check_invariants()
    info = cache.get_cache_info()
    assert info.size <= 200 and info.memory_usage_bytes <= info.memory_budget_bytes


@pytest.mark.slow      # an RSS figure: ASan's quarantine distorts it (tools/sanitize.sh skips slow)
def test_tinylfu_caches_free_their_sketch_and_slot_words() -> None:
    """Each cache holds a 1 MiB sketch (default max_entries) that its finalizer frees."""
    import gc

    def statm_rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def make_and_drop() -> None:
        for _ in range(30):
            c = SyncEmbeddingCache(policy="tinylfu")
            for i in range(3000):
                k = key(i)
                if c.get(k) is None:
                    c.put(k, vec(i, 8))
            del c

    make_and_drop()
    gc.collect()
    before = statm_rss()
    make_and_drop()                      # 30 x (1 MiB sketch, touched by the halvings)
    gc.collect()
    assert statm_rss() - before < 8 * 2**20
