"""Eviction: exact LRU victim order, the entry bound, the memory bound with several
dimensions, and TTL expiry driven by a fake clock."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MIB, FakeClock, entry_bytes, key, vec

from embcache import SyncEmbeddingCache


def present(c: SyncEmbeddingCache, n: int) -> list[int]:
    return [i for i in range(n) if key(i) in c]


# --- LRU ----------------------------------------------------------------------------------


def test_lru_victims_in_exact_order() -> None:
    c = SyncEmbeddingCache(4, dim=2)
    for i in range(4):
        c.put(key(i), vec(i, 2))
    # recency now (old -> new): 0 1 2 3; touch 0 then 2 -> 1 3 0 2
    c.get(key(0))
    c.get(key(2))
    expected_victims = [1, 3, 0, 2]
    for n, victim in enumerate(expected_victims):
        c.put(key(100 + n), vec(100 + n, 2))
        assert key(victim) not in c
        c._check_invariants()
    assert present(c, 200) == [100, 101, 102, 103]
    assert c.get_cache_info().evictions == 4


def test_overwrite_makes_most_recent() -> None:
    c = SyncEmbeddingCache(3, dim=1)
    for i in range(3):
        c.put(key(i), [i])
    c.put(key(0), [10])               # 1 2 0
    c.put(key(3), [3])                # evicts 1
    assert present(c, 4) == [0, 2, 3]
    c.put(key(4), [4])                # evicts 2
    assert present(c, 5) == [0, 3, 4]
    info = c.get_cache_info()
    assert (info.evictions, info.overwrites, info.size) == (2, 1, 3)


def test_miss_does_not_touch_recency() -> None:
    c = SyncEmbeddingCache(2, dim=1)
    c.put(key(0), [0])
    c.put(key(1), [1])
    c.get(key(9))
    c.put(key(2), [2])
    assert present(c, 3) == [1, 2]


def test_max_entries_one() -> None:
    c = SyncEmbeddingCache(1)
    for i in range(10):
        c.put(key(i), vec(i, 1 + i % 3))
        assert len(c) == 1
        np.testing.assert_array_equal(c.get(key(i)), vec(i, 1 + i % 3))
        if i:
            assert c.get(key(i - 1)) is None
    info = c.get_cache_info()
    assert info.evictions == 9 and info.size == 1
    c._check_invariants()


@pytest.mark.parametrize("dim", [None, 8])
def test_max_entries_bound_under_churn(dim) -> None:  # type: ignore[no-untyped-def]
    c = SyncEmbeddingCache(50, dim=dim)
    for i in range(1000):
        c.put(key(i), vec(i, 8))
        assert len(c) == min(i + 1, 50)
    # exactly the newest 50 survive
    assert present(c, 1000) == list(range(950, 1000))
    info = c.get_cache_info()
    assert info.evictions == 950 and info.puts == 1000
    assert info.memory_usage_bytes == 50 * entry_bytes(8)
    c._check_invariants()


def test_lru_matches_reference_under_random_access() -> None:
    from collections import OrderedDict

    rng = np.random.default_rng(5)
    c = SyncEmbeddingCache(16, dim=1)
    ref: OrderedDict[int, int] = OrderedDict()
    evictions = 0
    for step in range(5000):
        i = int(rng.integers(0, 40))
        if rng.random() < 0.5:
            c.put(key(i), [step])
            if i in ref:
                ref.move_to_end(i)
            elif len(ref) == 16:
                ref.popitem(last=False)
                evictions += 1
            ref[i] = step
        else:
            out = c.get(key(i))
            if i in ref:
                ref.move_to_end(i)
                assert out is not None and out[0] == ref[i]
            else:
                assert out is None
    assert present(c, 40) == sorted(ref)
    assert c.get_cache_info().evictions == evictions
    c._check_invariants()


# --- memory bound ---------------------------------------------------------------------------


def test_memory_bound_evicts_lru_until_it_fits() -> None:
    budget_mb = (10 * entry_bytes(100)) / MIB          # exactly ten entries of dim 100
    c = SyncEmbeddingCache(1000, max_memory_mb=budget_mb)
    assert c.get_cache_info().memory_budget_bytes == 10 * entry_bytes(100)
    for i in range(10):
        c.put(key(i), vec(i, 100))
    assert c.get_cache_info().evictions == 0
    # a vector of dim 250 needs the room of ~2.3 small ones: three go, LRU first
    c.get(key(0))
    c.put(key("big"), vec(7, 250))
    assert present(c, 10) == [0, 4, 5, 6, 7, 8, 9]
    info = c.get_cache_info()
    assert info.evictions == 3
    assert info.memory_usage_bytes == 7 * entry_bytes(100) + entry_bytes(250)
    assert info.memory_usage_bytes <= info.memory_budget_bytes
    c._check_invariants()
    # small vectors then displace the big one when it becomes the LRU
    for i in range(10, 14):
        c.put(key(i), vec(i, 100))
    c._check_invariants()
    info = c.get_cache_info()
    assert info.memory_usage_bytes <= info.memory_budget_bytes
    assert key("big") in c or info.memory_usage_bytes + entry_bytes(100) > info.memory_budget_bytes


def test_memory_bound_with_fixed_dim() -> None:
    c = SyncEmbeddingCache(10_000, max_memory_mb=(5 * entry_bytes(64) + 10) / MIB, dim=64)
    for i in range(20):
        c.put(key(i), vec(i, 64))
    assert present(c, 20) == [15, 16, 17, 18, 19]
    assert c.get_cache_info().evictions == 15
    c._check_invariants()


def test_entry_filling_the_whole_budget() -> None:
    dim = 1000
    c = SyncEmbeddingCache(100, max_memory_mb=entry_bytes(dim) / MIB)
    for i in range(5):
        c.put(key(i), vec(i, dim))
        assert present(c, 5) == [i]
    c.put(key("small1"), [1.0])
    c.put(key("small2"), [2.0])
    assert len(c) == 2            # the big one left; two small ones fit
    c.put(key(9), vec(9, dim))    # evicts both small ones
    assert present(c, 10) == [9] and len(c) == 1
    c._check_invariants()


def test_memory_bound_several_dims_random() -> None:
    rng = np.random.default_rng(2)
    dims = [3, 50, 300, 1200]
    c = SyncEmbeddingCache(64, max_memory_mb=0.02)
    budget = c.get_cache_info().memory_budget_bytes
    from collections import OrderedDict

    ref: OrderedDict[int, int] = OrderedDict()   # key -> dim, LRU first
    evictions = 0
    for step in range(4000):
        i = int(rng.integers(0, 120))
        if rng.random() < 0.6:
            d = int(rng.choice(dims))
            c.put(key(i), np.full(d, i, np.float32))
            if i in ref:
                del ref[i]
            while len(ref) >= 64 or sum(map(entry_bytes, ref.values())) + entry_bytes(d) > budget:
                ref.popitem(last=False)
                evictions += 1
            ref[i] = d
        else:
            out = c.get(key(i))
            if i in ref:
                ref.move_to_end(i)
                assert out is not None and out.shape == (ref[i],) and (out == i).all()
            else:
                assert out is None
        if step % 250 == 0:
            c._check_invariants()
    info = c.get_cache_info()
    assert info.size == len(ref)
    assert info.evictions == evictions
    assert info.memory_usage_bytes == sum(entry_bytes(x) for x in ref.values())
    assert info.memory_usage_bytes <= budget
    c._check_invariants()


def test_overwrite_growing_dim_evicts_others_not_itself() -> None:
    c = SyncEmbeddingCache(100, max_memory_mb=(4 * entry_bytes(10)) / MIB)
    for i in range(4):
        c.put(key(i), vec(i, 10))
    c.put(key(0), vec(0, 25))     # needs more room than it frees
    assert key(0) in c
    np.testing.assert_array_equal(c.get(key(0)), vec(0, 25))
    info = c.get_cache_info()
    assert info.memory_usage_bytes <= info.memory_budget_bytes
    assert info.overwrites == 1 and info.evictions >= 1
    assert key(1) not in c        # the LRU one went first
    c._check_invariants()


# --- TTL ----------------------------------------------------------------------------------


def test_expires_at_exactly_ttl(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(10, 10.0, clock=clock)
    c.put(key(1), [1.0])
    clock.advance(9.75)
    assert key(1) in c
    assert c.get(key(1)) is not None
    clock.advance(0.25)           # exactly ttl after the write
    assert key(1) not in c
    assert c.get(key(1)) is None
    info = c.get_cache_info()
    assert (info.hits, info.misses, info.expirations, info.size) == (1, 1, 1, 0)
    assert info.memory_usage_bytes == 0
    c._check_invariants()


def test_get_does_not_renew_ttl(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(10, 5.0, clock=clock)
    c.put(key(1), [1.0])
    for _ in range(4):
        clock.advance(1.0)
        assert c.get(key(1)) is not None
    clock.advance(1.0)
    assert c.get(key(1)) is None


def test_overwrite_renews_ttl(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(10, 5.0, clock=clock)
    c.put(key(1), [1.0])
    clock.advance(4.0)
    c.put(key(1), [2.0])
    clock.advance(4.0)
    assert c.get(key(1)).tolist() == [2.0]  # type: ignore[union-attr]
    clock.advance(1.0)
    assert c.get(key(1)) is None
    info = c.get_cache_info()
    assert info.overwrites == 1 and info.expirations == 1


def test_overwrite_with_other_dim_renews_ttl(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(10, 5.0, clock=clock)
    c.put(key(1), [1.0])
    clock.advance(4.0)
    c.put(key(1), [2.0, 3.0])
    clock.advance(4.0)
    assert c.get(key(1)).tolist() == [2.0, 3.0]  # type: ignore[union-attr]
    c._check_invariants()


def test_overwrite_of_expired_entry_counts_an_expiration(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(10, 5.0, clock=clock)
    c.put(key(1), [1.0])
    clock.advance(6.0)
    c.put(key(1), [2.0])
    info = c.get_cache_info()
    assert (info.overwrites, info.expirations, info.size, info.puts) == (0, 1, 1, 2)
    assert c.get(key(1)).tolist() == [2.0]  # type: ignore[union-attr]
    c._check_invariants()


def test_expired_entries_are_reclaimed_before_any_live_one(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(4, 10.0, dim=1, clock=clock)
    c.put(key(0), [0])
    c.put(key(1), [1])
    clock.advance(5.0)
    c.put(key(2), [2])
    c.put(key(3), [3])
    # make 0 and 1 most recently used: they are still the oldest writes
    c.get(key(0))
    c.get(key(1))
    clock.advance(5.0)            # 0 and 1 expire now; 2 and 3 are live (and LRU)
    c.put(key(4), [4])
    assert present(c, 5) == [2, 3, 4]        # the expired 0 made room, not the LRU 2
    c.put(key(5), [5])
    assert present(c, 6) == [2, 3, 4, 5]     # then the expired 1
    assert c.remove(key(1)) is False         # already reclaimed: no expiration counted here
    info = c.get_cache_info()
    assert (info.expirations, info.evictions, info.size) == (2, 0, 4)
    c.put(key(6), [6])                       # no expired left: the LRU (2) goes
    assert present(c, 7) == [3, 4, 5, 6]
    info = c.get_cache_info()
    assert (info.expirations, info.evictions) == (2, 1)
    c._check_invariants()


def test_only_the_oldest_expired_write_is_reclaimed_per_slot_needed(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(3, 10.0, dim=1, clock=clock)
    for i in range(3):
        c.put(key(i), [i])
    clock.advance(20.0)            # all three expired
    c.put(key(3), [3])             # needs one slot: reclaims only the oldest write (0)
    assert c.remove(key(0)) is False
    assert c.remove(key(1)) is False   # 1 was still there, expired: reclaimed by remove
    info = c.get_cache_info()          # reclaims 2
    assert (info.expirations, info.evictions, info.size, info.removals) == (3, 0, 1, 0)
    c._check_invariants()


def test_expired_reclaimed_oldest_write_first_for_memory(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(100, 10.0, (3 * entry_bytes(100)) / MIB, clock=clock)
    for i in range(3):
        c.put(key(i), vec(i, 100))     # written at t, t+1, t+2
        clock.advance(1.0)
    c.put(key(0), vec(0, 100))         # rewrite 0 at t+3: now the newest write
    c.get(key(1))
    c.get(key(2))                      # recency (LRU first): 0, 1, 2
    clock.advance(9.5)                 # t+12.5: 1 and 2 expired, 0 (the LRU) alive
    c.put(key(3), vec(3, 100))
    assert key(0) in c
    assert c.get_cache_info().evictions == 0
    c.put(key(4), vec(4, 100))
    assert key(0) in c and key(3) in c
    info = c.get_cache_info()
    assert (info.expirations, info.evictions) == (2, 0)
    c.put(key(5), vec(5, 100))         # nothing expired: LRU 0 goes
    assert present(c, 6) == [3, 4, 5]
    assert c.get_cache_info().evictions == 1
    c._check_invariants()


def test_len_and_info_reclaim_expired(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(10, 3.0, clock=clock)
    for i in range(5):
        c.put(key(i), vec(i, 4))
        clock.advance(1.0)
    # writes at t0..t0+4, now t0+5: 0, 1, 2 expired
    assert key(2) not in c and key(3) in c
    # `in` reclaimed nothing: remove still finds the expired entry (and counts it)
    assert c.remove(key(2)) is False
    assert len(c) == 2
    info = c.get_cache_info()
    assert info.expirations == 3
    assert info.size == 2
    assert info.memory_usage_bytes == 2 * entry_bytes(4)
    clock.advance(10.0)
    info = c.get_cache_info()
    assert info.size == 0 and info.expirations == 5 and info.memory_usage_bytes == 0
    assert (info.hits, info.misses) == (0, 0)
    c._check_invariants()


def test_remove_expired_returns_false(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(10, 1.0, clock=clock)
    c.put(key(1), [1.0])
    clock.advance(1.0)
    assert c.remove(key(1)) is False
    info = c.get_cache_info()
    assert (info.removals, info.expirations, info.size) == (0, 1, 0)
    c._check_invariants()


def test_get_on_expired_counts_miss_and_expiration(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(10, 2.0, clock=clock)
    c.put(key(1), [1.0])
    c.put(key(2), [2.0])
    clock.advance(2.5)
    assert c.get(key(1)) is None
    info = c.get_cache_info()           # reclaims 2 as well
    assert (info.misses, info.hits, info.expirations, info.size) == (1, 0, 2, 0)
    c._check_invariants()


def test_no_ttl_never_reads_the_clock() -> None:
    clock = FakeClock()
    c = SyncEmbeddingCache(10, None, clock=clock)
    reads = clock.reads
    c.put(key(1), [1.0])
    c.get(key(1))
    clock.advance(1e9)
    assert c.get(key(1)) is not None
    assert len(c) == 1
    assert clock.reads == reads


def test_clock_is_read_at_construction() -> None:
    clock = FakeClock()
    SyncEmbeddingCache(10, 5.0, clock=clock)
    assert clock.reads >= 1


def test_ttl_with_system_clock() -> None:
    c = SyncEmbeddingCache(10, 3600.0)
    c.put(key(1), [1.0])
    assert c.get(key(1)) is not None
    c2 = SyncEmbeddingCache(10, 1e-9)
    c2.put(key(1), [1.0])
    # a nanosecond ttl has passed by the time get reads the clock again (or at the latest
    # after a short busy wait)
    import time

    end = time.monotonic() + 0.001
    while time.monotonic() < end:
        pass
    assert c2.get(key(1)) is None
    c2._check_invariants()


def test_fractional_ttl_and_clock(clock: FakeClock) -> None:
    c = SyncEmbeddingCache(10, 0.25, clock=clock)
    c.put(key(1), [1.0])
    clock.advance(0.125)
    assert key(1) in c
    clock.advance(0.125)
    assert key(1) not in c


def test_expiry_with_lru_churn(clock: FakeClock) -> None:
    # a reference of the documented policy over many random steps
    from collections import OrderedDict

    rng = np.random.default_rng(9)
    ttl = 4.0
    c = SyncEmbeddingCache(8, ttl, dim=1, clock=clock)
    recency: OrderedDict[int, float] = OrderedDict()   # key -> expires_at, LRU first
    writes: OrderedDict[int, float] = OrderedDict()    # key -> expires_at, oldest write first
    stats = {"evictions": 0, "expirations": 0}

    def expired(i: int) -> bool:
        return writes[i] <= clock.now

    def drop(i: int) -> None:
        del recency[i]
        del writes[i]

    for _ in range(3000):
        i = int(rng.integers(0, 20))
        r = rng.random()
        if r < 0.15:
            clock.advance(float(rng.choice([0.5, 1.0, 2.0])))
        elif r < 0.6:
            c.put(key(i), [i])
            if i in writes:
                if expired(i):
                    stats["expirations"] += 1
                drop(i)
            while len(writes) >= 8:
                head = next(iter(writes))
                victim = head if expired(head) else next(iter(recency))
                stats["expirations" if expired(victim) else "evictions"] += 1
                drop(victim)
            recency[i] = writes[i] = clock.now + ttl
        else:
            out = c.get(key(i))
            if i in writes and not expired(i):
                recency.move_to_end(i)
                assert out is not None and out[0] == i
            else:
                assert out is None
                if i in writes:
                    stats["expirations"] += 1
                    drop(i)
    info = c.get_cache_info()
    live = [i for i in writes if not expired(i)]
    stats["expirations"] += len(writes) - len(live)
    assert info.size == len(live)
    assert info.evictions == stats["evictions"]
    assert info.expirations == stats["expirations"]
    c._check_invariants()
