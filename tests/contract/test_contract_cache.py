"""The contract of one key at a time, over every cache kind (contract_kinds.KINDS):
put / get round trip, misses, overwrite, remove, clear, len / in, TTL, the entry
and memory bounds (LRU eviction order) and get_cache_info's exact counts."""

from __future__ import annotations

import array
import time

import contract_kinds
import numpy as np
import pytest
import redis_servers
from conftest import FakeClock
from contract_kinds import KINDS, Kind, Make, assert_answer, counts, key, vec

kind = contract_kinds.kind
make = contract_kinds.make
redis_server = redis_servers.redis_server
flushed_server = redis_servers.flushed_server

MIB = 2**20


def test_put_then_get_round_trips_float32_copies(kind: Kind, make: Make) -> None:
    c = make()
    sources = {
        "f32": np.array([0.1, -0.2, 0.3], np.float32),
        "f64": np.array([0.1, 1 / 3, -2.5, 1e-40]),
        "int": np.arange(5, dtype=np.int64),
        "list": [1, 2.5, -3],
        "tuple": (1.0, 2.0),
        "range": range(5),
        "numpy-scalars": [np.float32(1.5), np.float64(2.5), np.int64(3)],
        "buffer": array.array("f", [4.0, 5.0, 6.0, 7.0]),
        "memoryview": memoryview(np.array([4.0, 5.0])),
    }
    # a kind of one fixed dimension takes the sources of that dimension
    sources = {n: s for n, s in sources.items() if kind.any_dim(len(np.asarray(s)))}
    for name, src in sources.items():
        c.put(key(name), src)
    for name, src in sources.items():
        want = c.stored(np.asarray(src).astype(np.float32))
        got = c.get(key(name))
        assert got is not None
        assert got.dtype == np.float32 and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
        assert got.flags.writeable and got.flags.c_contiguous
    assert len(c) == len(sources)
    assert len(c.shared()) == kind.in_tier(len(sources))


def test_stored_rows_are_copies(make: Make) -> None:
    c = make()
    src = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    c.put(key(1), src)
    src[0] = 42.0  # the caller's buffer changes after the put
    a = c.get(key(1))
    b = c.get(key(1))
    assert a is not None and b is not None
    assert not np.shares_memory(a, b)
    a[:] = 99.0  # and the caller scribbles on what it got
    held = c.stored([1.0, 2.0, 3.0, 4.0]).tolist()
    assert b.tolist() == held
    assert c.get(key(1)).tolist() == held  # type: ignore[union-attr]
    c.put(key(1), [7.0, 8.0, 9.0, 10.0])
    c.clear()
    assert b.tolist() == held  # returned arrays outlive the entry


@pytest.mark.parametrize("dim", [1, 4, 384])
def test_shapes_of_a_fixed_dimension(make: Make, dim: int) -> None:
    c = make(dim=dim)
    c.put(key(1), vec(1, dim))
    got = c.get(key(1))
    assert got is not None and got.shape == (dim,)
    np.testing.assert_array_equal(got, c.stored(vec(1, dim)))


def test_a_miss_is_none_and_counted(kind: Kind, make: Make) -> None:
    c = make()
    c.put(key(1), vec(1))
    assert c.get(key("absent")) is None
    assert c.get(key(1, model="other")) is None
    assert counts(c) == {
        "size": 1, "hits": 0, "misses": 2, "puts": 1, "overwrites": 0, "evictions": 0,
        "expirations": 0, "removals": 0, **kind.tier_counts(asked=2),
    }  # fmt: skip


def test_overwrite_replaces_and_counts(kind: Kind, make: Make) -> None:
    c = make()
    c.put(key(1), vec(1))
    c.put(key(1), vec(2))
    np.testing.assert_array_equal(c.get(key(1)), c.stored(vec(2)))
    c.put(key(1), vec(2))  # the same values again: still an overwrite
    if not kind.any_dim(16):  # one fixed dimension: the same script within it
        c.put(key(1), vec(3))
        np.testing.assert_array_equal(c.get(key(1)), c.stored(vec(3)))
        info = c.info()
        assert (info.size, info.puts, info.overwrites, info.evictions) == (1, 4, 3, 0)
        assert (info.memory_usage_bytes, info.dims) == (c.entry_bytes(4), (4,))
        return
    c.put(key(1), vec(3, 16))  # another dimension, when none is fixed
    np.testing.assert_array_equal(c.get(key(1)), c.stored(vec(3, 16)))
    info = c.info()
    assert (info.size, info.puts, info.overwrites, info.evictions) == (1, 4, 3, 0)
    assert info.memory_usage_bytes == c.entry_bytes(16)
    assert info.dims == (16,)
    c.put(key(1), vec(4, 2))
    assert (c.info().memory_usage_bytes, c.info().dims) == (c.entry_bytes(2), (2,))


def test_remove(kind: Kind, make: Make) -> None:
    c = make()
    for i in range(3):
        c.put(key(i), vec(i))
    assert c.remove(key(1)) is True
    assert key(1) not in c
    assert c.get(key(1)) is None  # gone from every tier
    assert c.remove(key(1)) is False
    assert c.remove(key("never")) is False
    np.testing.assert_array_equal(c.get(key(0)), c.stored(vec(0)))
    np.testing.assert_array_equal(c.get(key(2)), c.stored(vec(2)))
    info = c.info()
    assert (info.size, info.removals, info.memory_usage_bytes) == (2, 1, 2 * c.entry_bytes(4))
    assert len(c.shared()) == kind.in_tier(2)
    c.put(key(1), vec(7))  # a removed key can be stored again
    np.testing.assert_array_equal(c.get(key(1)), c.stored(vec(7)))
    assert c.info().overwrites == 0


@pytest.mark.parametrize("dim", [None, 4])
def test_clear_empties_and_keeps_stats(kind: Kind, make: Make, dim: int | None) -> None:
    c = make(max_entries=8, dim=dim)
    for i in range(5):
        c.put(key(i), vec(i))
    c.get(key(0))
    c.get(key("absent"))
    before = counts(c)
    c.clear()
    assert len(c) == 0 and all(key(i) not in c for i in range(5))
    info = c.info()
    assert (info.size, info.memory_usage_bytes, info.dims) == (0, 0, ())
    assert counts(c) == {**before, "size": 0}
    # what the in-process cache forgot, a shared tier still has
    assert_answer(c.get(key(3)), kind.forgotten(c.stored(vec(3))))
    c.clear()
    c.clear()
    for i in range(10, 20):  # usable again, up to its bound
        c.put(key(i), vec(i))
    assert len(c) == 8 and key(11) not in c
    np.testing.assert_array_equal(c.get(key(19)), c.stored(vec(19)))


def test_len_and_in_move_no_statistics(make: Make) -> None:
    c = make()
    for i in range(5):
        c.put(key(i), vec(i))
    before = c.info()
    assert len(c) == 5
    assert all(key(i) in c for i in range(5))
    assert key("absent") not in c and key(1, model="other") not in c
    assert c.info() == before


def test_ttl_expiry_on_an_injected_clock(kind: Kind, make: Make) -> None:
    if not kind.clock:
        pytest.skip("this kind reads the host's monotonic clock only")
    clock = FakeClock()
    c = make(ttl_seconds=5.0, clock=clock)
    c.put(key(1), vec(1))
    c.put(key(2), vec(2))
    clock.advance(4.0)
    c.put(key(2), vec(22))  # a write restarts its entry's time to live
    clock.advance(0.999)
    np.testing.assert_array_equal(c.get(key(1)), c.stored(vec(1)))
    clock.advance(0.001)
    assert key(1) not in c and key(2) in c
    assert len(c) == 1
    assert c.info().expirations == 1
    np.testing.assert_array_equal(c.get(key(2)), c.stored(vec(22)))
    clock.advance(4.0)
    assert key(2) not in c and len(c) == 0
    # expired in-process; a shared tier keeps its own time
    assert_answer(c.get(key(1)), kind.forgotten(c.stored(vec(1))))
    assert counts(c) == {
        "size": kind.refilled(1), "hits": 2, "misses": 1, "puts": 3 + kind.refilled(1),
        "overwrites": 1, "evictions": 0, "expirations": 2, "removals": 0,
        **kind.tier_counts(asked=1, found=1),
    }  # fmt: skip


@pytest.mark.parametrize("kind", [k for k in KINDS if not k.clock], ids=repr)
def test_ttl_expiry_on_the_host_clock(kind: Kind, make: Make) -> None:
    """A kind without an injected clock expires on the host's monotonic clock."""
    c = make(ttl_seconds=0.5)
    c.put(key(1), vec(1))
    np.testing.assert_array_equal(c.get(key(1)), c.stored(vec(1)))
    time.sleep(0.6)
    assert key(1) not in c and len(c) == 0
    assert_answer(c.get(key(1)), kind.forgotten(c.stored(vec(1))))
    info = c.info()
    assert (info.hits, info.misses, info.expirations, info.size) == (1, 1, 1, 0)


def test_entry_bound_evicts_the_least_recently_used(kind: Kind, make: Make) -> None:
    c = make(max_entries=3, dim=4)
    for i in range(3):
        c.put(key(i), vec(i))
    c.get(key(0))  # 1 is now the least recently used
    assert key(1) in c  # `in` refreshes nothing
    c.put(key(3), vec(3))
    assert [key(i) in c for i in range(4)] == [True, False, True, True]
    c.put(key(4), vec(4))  # then 2
    assert [key(i) in c for i in range(5)] == [True, False, False, True, True]
    assert counts(c) == {
        "size": 3, "hits": 1, "misses": 0, "puts": 5, "overwrites": 0, "evictions": 2,
        "expirations": 0, "removals": 0, **kind.tier_counts(),
    }  # fmt: skip
    assert_answer(c.get(key(1)), kind.forgotten(c.stored(vec(1))))  # evicted in-process
    kept = bool(kind.refilled(1))  # and kept in-process again, evicting 0
    assert [key(i) in c for i in range(5)] == [not kept, kept, False, True, True]
    assert len(c) == 3


def test_memory_bound_evicts_the_least_recently_used(kind: Kind, make: Make) -> None:
    each = kind.entry_bytes(8)
    c = make(max_entries=100, max_memory_mb=(3 * each + 0.5) / MIB, dim=8)
    for i in range(3):
        c.put(key(i), vec(i, 8))
    assert c.info().memory_usage_bytes == 3 * each
    c.get(key(0))
    c.put(key(3), vec(3, 8))
    assert [key(i) in c for i in range(4)] == [True, False, True, True]
    info = c.info()
    assert (info.size, info.evictions, info.memory_usage_bytes) == (3, 1, 3 * each)
    assert info.memory_usage_bytes <= info.memory_budget_bytes


def test_exact_counts_over_a_script(kind: Kind, make: Make) -> None:
    c = make(max_entries=4, dim=4)
    for i in range(4):
        c.put(key(i), vec(i))  # 4 puts
    c.put(key(0), vec(10))  # an overwrite: 0 is the most recent now
    c.get(key(1))  # hit: 1 after 0
    c.get(key(2))  # hit
    c.get(key("a"))  # miss
    c.get(key("b"))  # miss
    c.put(key(4), vec(4))  # evicts 3
    c.put(key(5), vec(5))  # evicts 0
    c.remove(key(4))  # a removal
    c.get(key(4))  # a miss (removed everywhere)
    assert [key(i) in c for i in range(6)] == [False, True, True, False, False, True]
    assert counts(c) == {
        "size": 3, "hits": 2, "misses": 3, "puts": 7, "overwrites": 1, "evictions": 2,
        "expirations": 0, "removals": 1, **kind.tier_counts(asked=3),
    }  # fmt: skip
    info = c.info()
    assert info.hit_rate == 2 / 5
