"""The batch API: get_many / put_many on SyncEmbeddingCache and on the asyncio
EmbeddingCache (including its sliced path for large batches), checked against the
single-key API and a model, with every rejected call leaving the cache unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any, Callable

import numpy as np
import pytest
from conftest import MIB, FakeClock, assert_unchanged, entry_bytes, key, snapshot, vec
from hypothesis import given, settings
from hypothesis import strategies as st

from embcache import (
    CacheKey,
    DimensionMismatchError,
    EmbeddingCache,
    EntryTooLargeError,
    InvalidVectorError,
    KeyTypeError,
    SyncEmbeddingCache,
    VectorTypeError,
)
from embcache.facade.cache import SLICE_BYTES

# --- helpers ------------------------------------------------------------------------------


class Batch:
    """One cache driven through either the synchronous core ("sync") or the asyncio
    facade ("async", each call run to completion with asyncio.run)."""

    def __init__(self, mode: str, *args: Any, **kwargs: Any) -> None:
        self.mode = mode
        if mode == "sync":
            self.cache: Any = SyncEmbeddingCache(*args, **kwargs)
            self.sync: SyncEmbeddingCache = self.cache
        else:
            self.cache = EmbeddingCache(*args, **kwargs)
            self.sync = self.cache.sync

    def get_many(self, keys: Any, out: Any = None) -> tuple[np.ndarray, np.ndarray]:
        if self.mode == "sync":
            return self.sync.get_many(keys, out=out)
        return asyncio.run(self.cache.get_many(keys, out))

    def put_many(self, keys: Any, matrix: Any) -> None:
        if self.mode == "sync":
            self.sync.put_many(keys, matrix)
        else:
            asyncio.run(self.cache.put_many(keys, matrix))


Make = Callable[..., Batch]


@pytest.fixture(params=["sync", "async"])
def make(request: pytest.FixtureRequest) -> Make:
    """A factory of Batch caches with SyncEmbeddingCache's constructor arguments."""
    mode = request.param
    return lambda *args, **kwargs: Batch(mode, *args, **kwargs)


def info(cache: Any) -> dict[str, Any]:
    """Every CacheInfo field of `cache` (core or facade) as a dict."""
    return dataclasses.asdict(getattr(cache, "sync", cache).get_cache_info())


def stats(cache: Any) -> dict[str, Any]:
    """info() without the allocation fields, which depend on how the entry table
    grew (one put_many reserves at once, a loop of put() grows step by step)."""
    got = info(cache)
    del got["allocated_bytes"], got["reserved_bytes"]
    return got


def rows(ids: Sequence[float], dim: int = 4) -> np.ndarray:
    """The float32 matrix whose row i is vec(ids[i], dim)."""
    if not len(ids):
        return np.empty((0, dim), np.float32)
    return np.stack([vec(i, dim) for i in ids])


def keys_of(ids: Sequence[Any]) -> list[CacheKey]:
    return [key(i) for i in ids]


def assert_matches_single_gets(matrix: np.ndarray, found: np.ndarray, expected: list) -> None:
    """`(matrix, found)` agrees row by row with a list of get() results."""
    assert found.dtype == np.bool_ and found.shape == (len(expected),)
    assert found.tolist() == [e is not None for e in expected]
    for i, e in enumerate(expected):
        if e is None:
            assert not matrix[i].any(), f"miss row {i} is not zero-filled"
        else:
            assert matrix[i].tobytes() == e.tobytes(), f"row {i} differs from get()"


# --- get_many: correctness against the single-key API -----------------------------------------


def test_get_many_matches_get(make: Make) -> None:
    b = make(32, dim=4)
    twin = SyncEmbeddingCache(32, dim=4)
    for i in range(10):
        b.sync.put(key(i), vec(i))
        twin.put(key(i), vec(i))
    ids = [3, 0, 42, 9, 3, 7, 100, 3]
    batch = keys_of(ids)

    matrix, found = b.get_many(batch)
    expected = [twin.get(k) for k in batch]

    assert isinstance(matrix, np.ndarray) and matrix.dtype == np.float32
    assert matrix.shape == (8, 4)
    assert matrix.flags.c_contiguous and matrix.flags.writeable
    assert_matches_single_gets(matrix, found, expected)
    assert found.tolist() == [True, True, False, True, True, True, False, True]
    assert np.array_equal(matrix[found], rows([3, 0, 9, 3, 7, 3]))
    # the same stats as one get() per key: each occurrence is one hit or one miss
    assert stats(b) == stats(twin)
    assert (info(b)["hits"], info(b)["misses"]) == (6, 2)
    b.sync._check_invariants()


def test_get_many_result_is_independent_of_the_cache(make: Make) -> None:
    b = make(8, dim=4)
    b.sync.put(key(1), vec(1))
    b.sync.put(key(2), vec(2))
    m1, found1 = b.get_many([key(1), key(2), key(3)])
    m2, found2 = b.get_many([key(1), key(2), key(3)])
    assert not np.shares_memory(m1, m2) and not np.shares_memory(found1, found2)
    m1[:] = -7.0
    found1[:] = False
    assert np.array_equal(b.sync.get(key(1)), vec(1))
    assert np.array_equal(b.sync.get(key(2)), vec(2))
    assert np.array_equal(m2, rows([1, 2, 0]) * np.array([[1], [1], [0]], np.float32))
    assert found2.tolist() == [True, True, False]


def test_get_many_duplicates_count_each_occurrence(make: Make) -> None:
    b = make(8, dim=4)
    b.sync.put(key(1), vec(1))
    b.sync.put(key(2), vec(2))
    before = info(b)
    matrix, found = b.get_many(keys_of([1, 1, 99, 1, 2, 99, 2]))
    assert found.tolist() == [True, True, False, True, True, False, True]
    assert np.array_equal(matrix[found], rows([1, 1, 1, 2, 2]))
    assert not matrix[~found].any()
    after = info(b)
    assert after["hits"] - before["hits"] == found.sum() == 5
    assert after["misses"] - before["misses"] == 2
    assert after["size"] == 2 and after["puts"] == before["puts"]


def test_get_many_mixed_hits_and_misses_any_dim(make: Make) -> None:
    b = make(16)  # no fixed dim
    twin = SyncEmbeddingCache(16)
    for i in range(0, 12, 2):
        b.sync.put(key(i), vec(i, 6))
        twin.put(key(i), vec(i, 6))
    batch = keys_of(range(12))
    matrix, found = b.get_many(batch)
    assert matrix.shape == (12, 6)
    assert found.tolist() == [i % 2 == 0 for i in range(12)]
    assert_matches_single_gets(matrix, found, [twin.get(k) for k in batch])
    assert stats(b) == stats(twin)


def test_get_many_hits_become_most_recent(make: Make) -> None:
    b = make(4, dim=4)
    for i in range(4):
        b.sync.put(key(i), vec(i))  # LRU order: 0 1 2 3
    b.get_many(keys_of([1, 0, 9, 1]))  # now 2 3 0 1: the last occurrence counts
    b.sync.put(key(4), vec(4))
    assert key(2) not in b.sync and key(0) in b.sync and key(1) in b.sync
    b.sync.put(key(5), vec(5))
    assert key(3) not in b.sync
    b.sync.put(key(6), vec(6))
    assert key(0) not in b.sync and key(1) in b.sync
    assert info(b)["evictions"] == 3
    b.sync._check_invariants()


def test_get_many_expired_entries_are_misses(make: Make) -> None:
    clock = FakeClock()
    b = make(16, 10.0, dim=4, clock=clock)
    twin_clock = FakeClock()
    twin = SyncEmbeddingCache(16, 10.0, dim=4, clock=twin_clock)
    for c, clk in ((b.sync, clock), (twin, twin_clock)):
        c.put(key(0), vec(0))
        c.put(key(1), vec(1))
        clk.advance(5.0)
        c.put(key(2), vec(2))
        c.put(key(3), vec(3))
        clk.advance(6.0)  # 0 and 1 have expired, 2 and 3 live
    batch = keys_of([0, 2, 0, 1, 9, 3])
    matrix, found = b.get_many(batch)
    assert found.tolist() == [False, True, False, False, False, True]
    assert not matrix[~found].any()
    assert np.array_equal(matrix[found], rows([2, 3]))
    assert key(0) not in b.sync and key(1) not in b.sync
    got = info(b)
    # each expired key is reclaimed once; each of its occurrences is a miss
    assert (got["hits"], got["misses"], got["expirations"], got["size"]) == (2, 4, 2, 2)
    assert got["memory_usage_bytes"] == 2 * entry_bytes(4)
    assert_matches_single_gets(matrix, found, [twin.get(k) for k in batch])
    assert stats(b) == stats(twin)
    b.sync._check_invariants()


def test_get_many_expired_entry_of_other_dim_is_not_a_mix(make: Make) -> None:
    clock = FakeClock()
    b = make(16, 10.0, clock=clock)
    b.sync.put(key(0), vec(0, 7))
    clock.advance(5.0)
    b.sync.put(key(1), vec(1, 4))
    clock.advance(6.0)
    matrix, found = b.get_many([key(0), key(1)])
    assert matrix.shape == (2, 4) and found.tolist() == [False, True]
    assert info(b)["expirations"] == 1


@pytest.mark.parametrize("n", [1, 3, 50])
def test_get_many_all_misses_shapes(make: Make, n: int) -> None:
    anydim = make(8)
    anydim.sync.put(key("other"), vec(1, 6))  # a live entry not asked for fixes nothing
    matrix, found = anydim.get_many(keys_of(range(n)))
    assert matrix.shape == (n, 0) and matrix.dtype == np.float32
    assert found.shape == (n,) and found.dtype == np.bool_ and not found.any()
    assert info(anydim)["misses"] == n

    fixed = make(8, dim=5)
    matrix, found = fixed.get_many(keys_of(range(n)))
    assert matrix.shape == (n, 5) and matrix.dtype == np.float32 and matrix.flags.c_contiguous
    assert not matrix.any() and not found.any()
    assert info(fixed)["misses"] == n


@pytest.mark.parametrize(("dim", "width"), [(None, 0), (5, 5)])
def test_get_many_empty_keys(make: Make, dim: int | None, width: int) -> None:
    b = make(8, dim=dim)
    b.sync.put(key(1), vec(1, 5))
    before = snapshot(b.sync, [key(1)])
    for empty in ([], (), iter([])):
        matrix, found = b.get_many(empty)
        assert matrix.shape == (0, width) and matrix.dtype == np.float32
        assert found.shape == (0,) and found.dtype == np.bool_
    assert_unchanged(b.sync, before)


# --- get_many: out= -------------------------------------------------------------------------


def test_get_many_out_written_and_returned(make: Make) -> None:
    b = make(8, dim=4)
    for i in (1, 2):
        b.sync.put(key(i), vec(i))
    out = np.full((4, 4), -1.0, np.float32)
    matrix, found = b.get_many(keys_of([2, 5, 1, 2]), out=out)
    assert matrix is out
    assert found.tolist() == [True, False, True, True]
    assert np.array_equal(out, np.stack([vec(2), np.zeros(4, np.float32), vec(1), vec(2)]))
    assert (info(b)["hits"], info(b)["misses"]) == (3, 1)

    empty = np.empty((0, 4), np.float32)
    matrix, found = b.get_many([], out=empty)
    assert matrix is empty and found.shape == (0,)


def test_get_many_out_on_any_dim_cache(make: Make) -> None:
    b = make(8)
    b.sync.put(key(1), vec(1, 6))
    out = np.full((3, 6), 9.0, np.float32)
    matrix, found = b.get_many(keys_of([7, 8, 9]), out=out)  # all misses: out fixes the dim
    assert matrix is out and not out.any() and not found.any()
    out[:] = 9.0
    matrix, found = b.get_many(keys_of([7, 1, 9]), out=out)
    assert matrix is out and found.tolist() == [False, True, False]
    assert np.array_equal(out[1], vec(1, 6)) and not out[[0, 2]].any()


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


N_OUT = 3
BAD_OUTS = [
    pytest.param(lambda: np.zeros((N_OUT, 4), np.float64), TypeError, id="float64"),
    pytest.param(lambda: np.zeros((N_OUT, 4), np.float16), TypeError, id="float16"),
    pytest.param(lambda: np.zeros((N_OUT, 4), np.int32), TypeError, id="int32"),
    pytest.param(lambda: np.zeros((N_OUT, 4), ">f4"), TypeError, id="big-endian"),
    pytest.param(lambda: np.zeros((N_OUT, 8), np.float32)[:, ::2], TypeError, id="strided"),
    pytest.param(lambda: np.zeros((N_OUT, 4), np.float32, order="F"), TypeError, id="fortran"),
    pytest.param(lambda: np.zeros((4, N_OUT), np.float32).T, TypeError, id="transposed"),
    pytest.param(lambda: _readonly(np.zeros((N_OUT, 4), np.float32)), TypeError, id="readonly"),
    pytest.param(lambda: np.zeros(N_OUT * 4, np.float32), TypeError, id="1-D"),
    pytest.param(lambda: np.zeros((N_OUT, 4, 1), np.float32), TypeError, id="3-D"),
    pytest.param(lambda: np.float32(0.0), TypeError, id="scalar"),
    pytest.param(lambda: [[0.0] * 4] * N_OUT, TypeError, id="list"),
    pytest.param(lambda: np.zeros((N_OUT + 1, 4), np.float32), ValueError, id="rows+1"),
    pytest.param(lambda: np.zeros((N_OUT - 1, 4), np.float32), ValueError, id="rows-1"),
    pytest.param(lambda: np.zeros((N_OUT, 5), np.float32), DimensionMismatchError, id="dim5"),
    pytest.param(lambda: np.zeros((N_OUT, 0), np.float32), DimensionMismatchError, id="dim0"),
]


@pytest.mark.parametrize(("make_out", "exc"), BAD_OUTS)
def test_get_many_rejects_bad_out(make: Make, make_out: Callable[[], Any], exc: type) -> None:
    b = make(8, dim=4)
    for i in range(3):
        b.sync.put(key(i), vec(i))
    batch = keys_of([0, 9, 2])
    before = snapshot(b.sync, keys_of(range(3)))
    out = make_out()
    copy = np.array(out, copy=True)
    with pytest.raises(exc) as err:
        b.get_many(batch, out=out)
    assert not isinstance(err.value, KeyTypeError)
    if isinstance(out, np.ndarray):
        assert np.array_equal(out, copy), "a rejected out was written to"
    assert_unchanged(b.sync, before)


def test_get_many_rejects_out_of_other_dim_than_hits(make: Make) -> None:
    b = make(8)
    b.sync.put(key(1), vec(1, 4))
    before = snapshot(b.sync, [key(1)])
    out = np.full((3, 5), 3.0, np.float32)
    with pytest.raises(DimensionMismatchError, match="out has 5 columns.*entries have dim 4"):
        b.get_many(keys_of([8, 1, 9]), out=out)
    assert (out == 3.0).all()
    assert_unchanged(b.sync, before)


# --- get_many: several dimensions ------------------------------------------------------------


def test_get_many_mixed_dims_rejected(make: Make) -> None:
    b = make(3)
    b.sync.put(key("a"), vec(1, 4))
    b.sync.put(key("b"), vec(2, 7))
    b.sync.put(key("c"), vec(3, 4))  # LRU order: a b c
    before = info(b)
    for out in (None, np.zeros((4, 4), np.float32), np.zeros((4, 7), np.float32)):
        with pytest.raises(DimensionMismatchError, match=r"2 different dimensions \(4, 7\)") as e:
            b.get_many([key("a"), key("zz"), key("b"), key("c")], out=out)
        assert isinstance(e.value, ValueError)
        if out is not None:
            assert not out.any()
    assert info(b) == before  # no hits or misses counted
    # no recency change: "a" is still the least recently used entry
    b.sync.put(key("d"), vec(4, 4))
    assert key("a") not in b.sync and key("b") in b.sync and key("c") in b.sync
    b.sync._check_invariants()


def test_get_many_many_dims_named(make: Make) -> None:
    b = make(16)
    dims = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    for d in dims:
        b.sync.put(key(d), vec(d, d))
    before = snapshot(b.sync, keys_of(dims))
    named = r"more than 8 different dimensions \(2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\)"
    with pytest.raises(DimensionMismatchError, match=named):
        b.get_many(keys_of(dims))
    assert_unchanged(b.sync, before)


def test_get_many_over_a_thousand_dims_is_an_error_not_a_crash() -> None:
    # the dimension scan once wrote past an 8-slot array: garbage counts, then a segfault
    c = SyncEmbeddingCache(2000, None, 64)
    dims = list(range(1, 1501))
    for d in dims:
        c.put(key(d), vec(d, d))
    with pytest.raises(DimensionMismatchError, match=r"more than 8 different dimensions \(1, 2, "):
        c.get_many(keys_of(dims))
    c._check_invariants()


# --- keys ---------------------------------------------------------------------------------

BAD_KEY_BATCHES = [
    pytest.param([key(0), key(1), "hash-2"], r"keys\[2\] must be a CacheKey, got str", id="str"),
    pytest.param([None], r"keys\[0\] must be a CacheKey, got NoneType", id="None"),
    pytest.param([key(0), ("h", "m")], r"keys\[1\] must be a CacheKey, got tuple", id="tuple"),
    pytest.param((key(0), 7, key(1)), r"keys\[1\] must be a CacheKey, got int", id="int"),
    pytest.param(key(0), "sequence of CacheKey, got a single CacheKey", id="single"),
    pytest.param("hash-0", "sequence of CacheKey, got str", id="bare-str"),
    pytest.param(b"hash-0", "sequence of CacheKey, got bytes", id="bare-bytes"),
    pytest.param(5, "sequence of CacheKey, got int", id="bare-int"),
    pytest.param(None, "sequence of CacheKey, got NoneType", id="bare-None"),
]


def _n_keys(keys: Any) -> int:
    return len(keys) if isinstance(keys, (list, tuple)) else 1


@pytest.mark.parametrize(("keys", "message"), BAD_KEY_BATCHES)
def test_get_many_rejects_bad_keys(make: Make, keys: Any, message: str) -> None:
    b = make(8, dim=4)
    b.sync.put(key(0), vec(0))
    b.sync.put(key(1), vec(1))
    before = snapshot(b.sync, [key(0), key(1)])
    with pytest.raises(KeyTypeError, match=message):
        b.get_many(keys)
    with pytest.raises(KeyTypeError, match=message):
        b.get_many(keys, out=np.zeros((_n_keys(keys), 4), np.float32))
    assert_unchanged(b.sync, before)


@pytest.mark.parametrize(("keys", "message"), BAD_KEY_BATCHES)
def test_put_many_rejects_bad_keys(make: Make, keys: Any, message: str) -> None:
    b = make(8, dim=4)
    b.sync.put(key(0), vec(0))
    before = snapshot(b.sync, [key(0), key(1)])
    with pytest.raises(KeyTypeError, match=message):
        b.put_many(keys, rows(range(100, 100 + _n_keys(keys))))
    assert_unchanged(b.sync, before)


@pytest.mark.parametrize(
    "as_keys",
    [list, tuple, lambda ks: (k for k in ks), lambda ks: map(lambda k: k, ks), dict.fromkeys],
    ids=["list", "tuple", "generator", "map", "dict"],
)
def test_key_iterables_accepted(make: Make, as_keys: Callable[[list], Any]) -> None:
    b = make(8, dim=4)
    batch = keys_of([0, 1, 2])
    b.put_many(as_keys(batch), rows([0, 1, 2]))
    assert len(b.sync) == 3
    matrix, found = b.get_many(as_keys(batch + [key(9)]))
    assert found.tolist() == [True, True, True, False]
    assert np.array_equal(matrix[:3], rows([0, 1, 2]))


# --- put_many: correctness ------------------------------------------------------------------


@pytest.mark.parametrize("max_entries", [64, 3])
def test_put_many_same_as_put_in_order(make: Make, max_entries: int) -> None:
    b = make(max_entries, dim=4)
    twin = SyncEmbeddingCache(max_entries, dim=4)
    for c in (b.sync, twin):
        c.put(key(2), vec(-2))
        c.put(key(9), vec(-9))
    ids = [0, 1, 2, 1, 3, 0, 4]
    matrix = rows([100 + pos for pos in range(len(ids))])
    b.put_many(keys_of(ids), matrix)
    for k, row in zip(keys_of(ids), matrix):
        twin.put(k, row)
    assert stats(b) == stats(twin)
    every = keys_of([0, 1, 2, 3, 4, 9])
    assert snapshot(b.sync, every).stored == snapshot(twin, every).stored
    if max_entries == 64:
        got = info(b)
        # duplicates within the batch: the last row wins and overwrites are counted
        assert (got["size"], got["puts"], got["overwrites"]) == (6, 9, 3)
        assert np.array_equal(b.sync.get(key(1)), vec(103))
        assert np.array_equal(b.sync.get(key(0)), vec(105))
        assert np.array_equal(b.sync.get(key(2)), vec(102))
    b.sync._check_invariants()


REAL_DTYPES = [
    np.int8,
    np.uint8,
    np.int16,
    np.int32,
    np.int64,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.longdouble,
    ">f4",
    ">f8",
    ">i4",
    "<f2",
]


@pytest.mark.parametrize("dtype", REAL_DTYPES, ids=str)
def test_put_many_any_real_dtype(make: Make, dtype: Any) -> None:
    b = make(8, dim=4)
    twin = SyncEmbeddingCache(8, dim=4)
    matrix = np.arange(12).reshape(3, 4).astype(dtype)
    b.put_many(keys_of([0, 1, 2]), matrix)
    for i in range(3):
        twin.put(key(i), matrix[i])
    got, found = b.get_many(keys_of([0, 1, 2]))
    assert found.all()
    assert np.array_equal(got, np.arange(12, dtype=np.float32).reshape(3, 4))
    assert snapshot(b.sync, keys_of(range(3))).stored == snapshot(twin, keys_of(range(3))).stored


def test_put_many_rounds_float64_like_put(make: Make) -> None:
    b = make(8, dim=5)
    twin = SyncEmbeddingCache(8, dim=5)
    matrix = np.random.default_rng(1).standard_normal((4, 5)) * 1e30
    b.put_many(keys_of(range(4)), matrix)
    for i in range(4):
        twin.put(key(i), matrix[i])
    got, _ = b.get_many(keys_of(range(4)))
    assert np.array_equal(got, matrix.astype(np.float32))
    assert snapshot(b.sync, keys_of(range(4))).stored == snapshot(twin, keys_of(range(4))).stored


def _unaligned(data: np.ndarray) -> np.ndarray:
    buf = np.zeros(data.size * 4 + 1, np.uint8)
    a = buf[1:].view(np.float32).reshape(data.shape)
    a[:] = data
    assert not a.flags.aligned
    return a


DATA = np.arange(12, dtype=np.float32).reshape(3, 4) * 1.5 - 4
LAYOUTS = [
    pytest.param(lambda d: d.copy(), id="c-float32"),
    pytest.param(lambda d: np.asfortranarray(d), id="fortran"),
    pytest.param(lambda d: d.T.copy().T, id="transposed"),
    pytest.param(lambda d: np.asfortranarray(d.astype(np.float64)), id="fortran-f64"),
    pytest.param(lambda d: np.repeat(np.repeat(d, 2, 0), 3, 1)[::2, ::3], id="strided"),
    pytest.param(
        lambda d: np.repeat(np.repeat(d.astype(np.float64), 2, 0), 3, 1)[::2, ::3],
        id="strided-f64",
    ),
    pytest.param(lambda d: d[::-1, ::-1].copy()[::-1, ::-1], id="negative-strides"),
    pytest.param(lambda d: _unaligned(d), id="unaligned"),
    pytest.param(lambda d: d.tolist(), id="list-of-lists"),
    pytest.param(lambda d: tuple(tuple(r) for r in d.tolist()), id="tuple-of-tuples"),
    pytest.param(lambda d: [r.astype(np.float64) for r in d], id="list-of-arrays"),
    pytest.param(lambda d: [list(map(float, r)) for r in d], id="list-of-floats"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_put_many_any_layout(make: Make, layout: Callable[[np.ndarray], Any]) -> None:
    b = make(8, dim=4)
    matrix = layout(DATA)
    b.put_many(keys_of([0, 1, 2]), matrix)
    got, found = b.get_many(keys_of([0, 1, 2]))
    assert found.all() and np.array_equal(got, DATA)


def test_put_many_broadcast_rows(make: Make) -> None:
    b = make(8, dim=4)
    matrix = np.broadcast_to(vec(7), (3, 4))  # zero row stride, read-only
    b.put_many(keys_of([0, 1, 2]), matrix)
    got, found = b.get_many(keys_of([0, 1, 2]))
    assert found.all() and np.array_equal(got, rows([7, 7, 7]))


def test_put_many_caller_may_reuse_the_matrix(make: Make) -> None:
    b = make(8, dim=4)
    matrix = rows([1, 2])
    b.put_many([key(1), key(2)], matrix)
    matrix[:] = np.nan
    got, _ = b.get_many([key(1), key(2)])
    assert np.array_equal(got, rows([1, 2]))


BAD_SHAPES = [
    pytest.param(2, lambda: np.ones(4), r"matrix must be 2-D.*shape \(4,\)", id="1-D"),
    pytest.param(1, lambda: np.ones(4, np.float32), "matrix must be 2-D", id="1-D-one-key"),
    pytest.param(2, lambda: np.ones((2, 4, 1)), r"2-D.*shape \(2, 4, 1\)", id="3-D"),
    pytest.param(1, lambda: np.float32(1.0), r"2-D.*shape \(\)", id="0-D"),
    pytest.param(1, lambda: 5, "2-D", id="int"),
    pytest.param(3, lambda: np.ones((4, 4)), "matrix has 4 rows for 3 keys", id="rows+1"),
    pytest.param(3, lambda: np.ones((2, 4)), "matrix has 2 rows for 3 keys", id="rows-1"),
    pytest.param(3, lambda: np.ones((0, 4)), "matrix has 0 rows for 3 keys", id="rows-0"),
    pytest.param(1, lambda: np.ones((3, 4)), "matrix has 3 rows for 1 keys", id="rows-3"),
    pytest.param(2, lambda: np.ones((2, 0)), "matrix rows are empty", id="zero-columns"),
    pytest.param(2, lambda: [[], []], "matrix rows are empty", id="empty-lists"),
    pytest.param(2, lambda: [[1.0, 2.0], [3.0]], "could not be read as a 2-D array", id="ragged"),
    pytest.param(2, lambda: [1.0, 2.0], "2-D", id="flat-list"),
]


@pytest.mark.parametrize(("n", "make_matrix", "message"), BAD_SHAPES)
def test_put_many_rejects_bad_shapes(
    make: Make, n: int, make_matrix: Callable[[], Any], message: str
) -> None:
    for dim in (4, None):
        b = make(8, dim=dim)
        b.sync.put(key(0), vec(0))
        before = snapshot(b.sync, keys_of(range(4)))
        with pytest.raises(InvalidVectorError, match=message):
            b.put_many(keys_of(range(n)), make_matrix())
        assert_unchanged(b.sync, before)


@pytest.mark.parametrize(
    "matrix", [np.empty((3, 0)), [[]], np.empty((2, 0), np.float32)], ids=["3x0", "[[]]", "2x0"]
)
def test_put_many_rejects_rows_for_no_keys(make: Make, matrix: Any) -> None:
    # a matrix with rows but no keys is a row-count mismatch, not an empty batch
    b = make(8, dim=4)
    before = snapshot(b.sync)
    with pytest.raises(InvalidVectorError, match="rows for 0 keys"):
        b.put_many([], matrix)
    assert_unchanged(b.sync, before)


def _bad(dtype: Any, r: int, c: int, value: float, message: str) -> Any:
    def build() -> np.ndarray:
        m = np.arange(20, dtype=np.float64).reshape(5, 4).astype(dtype)
        m[r, c] = value
        return m

    return pytest.param(
        build, rf"matrix\[{r}, {c}\] {message}", id=f"{np.dtype(dtype).str}-{r}-{c}"
    )


NON_FINITE = [
    _bad(np.float32, 0, 0, np.nan, "is nan"),
    _bad(np.float32, 2, 3, np.inf, "is inf"),
    _bad(np.float32, 4, 3, -np.inf, "is -inf"),
    _bad(np.float64, 4, 1, np.nan, "is nan"),
    _bad(np.float64, 3, 2, 1e39, r"= 1e\+39 overflows float32"),
    _bad(np.float64, 1, 0, -3.5e38, r"= -3.5e\+38 overflows float32"),
    _bad(np.float16, 2, 2, np.inf, "is inf"),
    _bad(">f4", 4, 0, np.nan, "is nan"),
    _bad(">f8", 1, 3, 1e300, r"= 1e\+300 overflows float32"),
]


@pytest.mark.parametrize(("build", "message"), NON_FINITE)
def test_put_many_rejects_non_finite_and_stores_nothing(
    make: Make, build: Callable[[], np.ndarray], message: str
) -> None:
    b = make(8, dim=4)
    for i in (1, 3, 7):
        b.sync.put(key(i), vec(-i))
    batch = keys_of(range(5))  # overwrites 1 and 3, adds 0, 2, 4
    before = snapshot(b.sync, [*batch, key(7)])
    strided = np.repeat(build(), 2, axis=1)[:, ::2]
    for matrix in (build(), strided, np.asfortranarray(build()), build().tolist()):
        with pytest.raises(InvalidVectorError, match=message):
            b.put_many(batch, matrix)
    assert_unchanged(b.sync, before)


def test_put_many_bad_last_row_of_large_batch_stores_nothing(make: Make) -> None:
    n, dim = 5000, 64
    b = make(n + 10, max_memory_mb=8.0, dim=dim)
    old = keys_of(range(-3, 0))
    for k in old:
        b.sync.put(k, np.ones(dim))
    batch = keys_of(range(-3, n - 3))  # overwrites the three old keys, then adds n - 3
    matrix = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    matrix[-1, -1] = np.nan
    before = snapshot(b.sync, old)
    with pytest.raises(InvalidVectorError, match=rf"matrix\[{n - 1}, {dim - 1}\]"):
        b.put_many(batch, matrix)
    assert_unchanged(b.sync, before)
    assert not any(k in b.sync for k in batch[3:])


BAD_DTYPES = [
    pytest.param(lambda: np.ones((2, 4), bool), "dtype bool", id="bool"),
    pytest.param(lambda: [[True, False]] * 2, "dtype bool", id="bool-list"),
    pytest.param(lambda: np.ones((2, 4), np.complex64), "dtype complex64", id="complex64"),
    pytest.param(lambda: np.ones((2, 4)) + 1j, "dtype complex128", id="complex128"),
    pytest.param(lambda: np.full((2, 4), "a"), "dtype <U1", id="unicode"),
    pytest.param(lambda: [[1.0, "a"], [2.0, 3.0]], "dtype <U", id="mixed-list"),
    pytest.param(lambda: np.ones((2, 4), object), "dtype object", id="object"),
    pytest.param(lambda: [[None, None]] * 2, "dtype object", id="None-list"),
    pytest.param(lambda: np.zeros((2, 4), "datetime64[s]"), "dtype datetime64", id="datetime"),
    pytest.param(lambda: np.zeros((2, 2), [("x", "f4")]), "dtype", id="structured"),
    pytest.param(lambda: "abcd", "got str", id="str"),
    pytest.param(lambda: b"abcd", "got bytes", id="bytes"),
]


@pytest.mark.parametrize(("make_matrix", "message"), BAD_DTYPES)
def test_put_many_rejects_non_real_dtypes(
    make: Make, make_matrix: Callable[[], Any], message: str
) -> None:
    b = make(8, dim=4)
    b.sync.put(key(0), vec(0))
    before = snapshot(b.sync, [key(0), key(1)])
    with pytest.raises(VectorTypeError, match=f"matrix must .*{message}"):
        b.put_many([key(0), key(1)], make_matrix())
    assert_unchanged(b.sync, before)


@pytest.mark.parametrize("dim", [1, 3, 5, 768])
def test_put_many_rejects_other_dim_when_fixed(make: Make, dim: int) -> None:
    b = make(8, dim=4)
    b.sync.put(key(0), vec(0))
    before = snapshot(b.sync, [key(0), key(1)])
    with pytest.raises(
        DimensionMismatchError, match=f"matrix has dim {dim}, but this cache stores dim 4"
    ):
        b.put_many([key(0), key(1)], np.ones((2, dim), np.float32))
    assert_unchanged(b.sync, before)


def test_put_many_rejects_entry_larger_than_budget(make: Make) -> None:
    b = make(8, max_memory_mb=0.01)
    b.sync.put(key(0), vec(0))
    before = snapshot(b.sync, [key(0)])
    with pytest.raises(EntryTooLargeError, match="dim 4000 needs"):
        b.put_many([key(0), key(1)], np.ones((2, 4000), np.float32))
    assert_unchanged(b.sync, before)


EMPTY_BATCHES = [
    pytest.param(lambda: [], lambda: np.empty((0, 4)), id="list-0x4"),
    pytest.param(lambda: [], lambda: [], id="list-list"),
    pytest.param(lambda: (), lambda: np.empty((0, 4), np.float32), id="tuple-0x4"),
    pytest.param(lambda: iter([]), lambda: np.empty((0, 0)), id="iter-0x0"),
    pytest.param(lambda: [], lambda: np.empty(0, np.int32), id="list-empty-int"),
    pytest.param(lambda: (), lambda: (), id="tuple-tuple"),
]


@pytest.mark.parametrize(("make_keys", "make_matrix"), EMPTY_BATCHES)
@pytest.mark.parametrize("dim", [4, None])
def test_put_many_empty_batch_is_a_no_op(
    make: Make, make_keys: Callable[[], Any], make_matrix: Callable[[], Any], dim: int | None
) -> None:
    b = make(8, dim=dim)
    b.sync.put(key(0), vec(0))
    before = snapshot(b.sync, [key(0)])
    b.put_many(make_keys(), make_matrix())
    assert_unchanged(b.sync, before)


def test_put_many_larger_than_max_entries_keeps_the_last_rows(make: Make) -> None:
    b = make(5, dim=4)
    b.sync.put(key(100), vec(100))
    b.sync.put(key(101), vec(101))
    b.put_many(keys_of(range(12)), rows(range(12)))
    assert len(b.sync) == 5
    assert [k in b.sync for k in keys_of(range(12))] == [False] * 7 + [True] * 5
    assert key(100) not in b.sync and key(101) not in b.sync
    got = info(b)
    assert (got["evictions"], got["puts"], got["size"]) == (9, 14, 5)
    matrix, found = b.get_many(keys_of(range(7, 12)))
    assert found.all() and np.array_equal(matrix, rows(range(7, 12)))
    # LRU order follows the batch order: 7 is now the oldest again after this get_many
    b.get_many(keys_of(range(8, 12)))
    b.sync.put(key(50), vec(50))
    assert key(7) not in b.sync and all(k in b.sync for k in keys_of(range(8, 12)))
    b.sync._check_invariants()


def test_put_many_larger_than_max_entries_with_duplicates(make: Make) -> None:
    ids = [0, 1, 2, 3, 0, 4, 5, 1, 6, 0]
    b = make(4, dim=4)
    twin = SyncEmbeddingCache(4, dim=4)
    matrix = rows([10 + p for p in range(len(ids))])
    b.put_many(keys_of(ids), matrix)
    for k, row in zip(keys_of(ids), matrix):
        twin.put(k, row)
    assert stats(b) == stats(twin)
    every = keys_of(range(7))
    assert snapshot(b.sync, every).stored == snapshot(twin, every).stored
    assert [k in b.sync for k in every] == [True, True, False, False, False, True, True]


def test_put_many_memory_bound_eviction(make: Make) -> None:
    budget = 4 * entry_bytes(16)
    b = make(100, max_memory_mb=budget / MIB)
    twin = SyncEmbeddingCache(100, max_memory_mb=budget / MIB)
    for c in (b.sync, twin):
        c.put(key("a"), vec(1, 16))
        c.put(key("b"), vec(2, 16))
        c.get(key("a"))  # LRU order: b a
    b.put_many(keys_of("cde"), rows([3, 4, 5], 16))
    assert key("b") not in b.sync and all(k in b.sync for k in keys_of("acde"))
    got = info(b)
    assert (got["evictions"], got["memory_usage_bytes"]) == (1, budget)
    # rows of another dimension make room by memory, not by count
    b.put_many(keys_of("fg"), rows([6, 7], 40))
    for k, row in zip(keys_of("cdefg"), [*rows([3, 4, 5], 16), *rows([6, 7], 40)]):
        twin.put(k, row)
    assert stats(b) == stats(twin)
    every = keys_of("abcdefg")
    assert snapshot(b.sync, every).stored == snapshot(twin, every).stored
    assert key("f") in b.sync and key("g") in b.sync and key("a") not in b.sync
    assert info(b)["memory_usage_bytes"] <= budget
    b.sync._check_invariants()


# --- threads ---------------------------------------------------------------------------------


def _check_rows(matrix: np.ndarray, found: np.ndarray, ids: np.ndarray) -> None:
    """Every found row is one repeated value id * 1000 + generation; misses are zeros."""
    assert (matrix == matrix[:, :1]).all(), "a torn row: values of several writes"
    assert not matrix[~found].any()
    assert (matrix[found, 0].astype(np.int64) // 1000 == ids[found]).all(), "a row of another key"


def test_threads_race_batches_with_single_ops() -> None:
    dim, n, extra, workers = 768, 4000, 400, 8
    total = n + extra
    cache = SyncEmbeddingCache(total, max_memory_mb=40.0, dim=dim)
    keys = keys_of(range(total))
    all_ids = np.arange(total)
    assert n * dim * 4 > 262144  # the row copies run without the GIL
    counts = [dict.fromkeys(("hits", "misses", "puts", "removals", "ops"), 0) for _ in range(8)]
    errors: list[BaseException] = []
    stop = threading.Event()
    start = threading.Barrier(workers + 1)

    def worker(t: int) -> None:
        rng = random.Random(t)
        c = counts[t]
        start.wait()
        try:
            while not stop.is_set() and c["ops"] < 20_000:
                c["ops"] += 1
                i = rng.randrange(total)
                op = rng.random()
                if op < 0.35:
                    cache.put(keys[i], np.full(dim, i * 1000 + 500 + t, np.float32))
                    c["puts"] += 1
                elif op < 0.7:
                    v = cache.get(keys[i])
                    if v is None:
                        c["misses"] += 1
                    else:
                        c["hits"] += 1
                        _check_rows(v[None, :], np.array([True]), np.array([i]))
                elif op < 0.8:
                    ids = np.array([rng.randrange(total) for _ in range(3)])
                    m, f = cache.get_many([keys[j] for j in ids])
                    _check_rows(m, f, ids)
                    c["hits"] += int(f.sum())
                    c["misses"] += int((~f).sum())
                else:
                    c["removals"] += cache.remove(keys[i])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(workers)]
    for th in threads:
        th.start()
    main = dict.fromkeys(("hits", "misses", "puts"), 0)
    matrix = np.empty((n, dim), np.float32)
    try:
        start.wait()
        for gen in range(1, 7):
            matrix[:] = (all_ids[:n] * 1000 + gen).astype(np.float32)[:, None]
            cache.put_many(keys[:n], matrix)
            main["puts"] += n
            got, found = cache.get_many(keys)
            _check_rows(got, found, all_ids)
            main["hits"] += int(found.sum())
            main["misses"] += int((~found).sum())
            cache._check_invariants()
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert not errors, errors[0]
    assert all(c["ops"] > 0 for c in counts)

    cache._check_invariants()
    got = info(cache)
    assert got["hits"] == main["hits"] + sum(c["hits"] for c in counts)
    assert got["misses"] == main["misses"] + sum(c["misses"] for c in counts)
    assert got["puts"] == main["puts"] + sum(c["puts"] for c in counts)
    assert got["removals"] == sum(c["removals"] for c in counts)
    assert got["evictions"] == got["expirations"] == 0
    assert got["size"] == got["puts"] - got["overwrites"] - got["removals"]
    final, found = cache.get_many(keys)
    _check_rows(final, found, all_ids)
    assert found.sum() == got["size"] == len(cache)


# --- the async facade: slicing ---------------------------------------------------------------

BIG_N, BIG_DIM = 6000, 768


async def ticks_during(awaitable: Awaitable[Any]) -> tuple[Any, int]:
    """Await `awaitable` while a ticker coroutine counts its turns on the loop;
    returns the result and how many times the ticker ran meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker has started
    first = ticks
    try:
        result = await awaitable
        return result, ticks - first
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def big_batch(n: int = BIG_N, dim: int = BIG_DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)


def test_slicing_parameters() -> None:
    step = SLICE_BYTES // (4 * BIG_DIM)
    assert BIG_N * BIG_DIM * 4 > 8 * SLICE_BYTES  # several slices
    assert BIG_N > 8 * step


@pytest.mark.parametrize("dim", [None, BIG_DIM])
def test_async_large_batches_yield_to_the_loop(dim: int | None) -> None:
    keys = keys_of(range(BIG_N))
    matrix = big_batch()
    twin = SyncEmbeddingCache(BIG_N + 10, max_memory_mb=40.0, dim=dim)
    twin.put(key(5), vec(5, BIG_DIM))
    twin.put(key("old"), vec(6, BIG_DIM))
    twin.put_many(keys, matrix)
    rng = np.random.default_rng(1)
    ids = rng.permutation([*range(BIG_N), *range(BIG_N, BIG_N + 500), *range(0, BIG_N, 7)])
    lookup = keys_of(ids.tolist())
    want_matrix, want_found = twin.get_many(lookup)

    async def main() -> None:
        cache = EmbeddingCache(BIG_N + 10, max_memory_mb=40.0, dim=dim)
        await cache.put(key(5), vec(5, BIG_DIM))
        await cache.put(key("old"), vec(6, BIG_DIM))
        _, put_ticks = await ticks_during(cache.put_many(keys, matrix))
        assert put_ticks >= 4, "put_many held the event loop for the whole batch"
        (got, found), get_ticks = await ticks_during(cache.get_many(lookup))
        assert get_ticks >= 4, "get_many held the event loop for the whole batch"
        assert got.shape == (len(lookup), BIG_DIM) and got.flags.c_contiguous
        assert got.dtype == np.float32
        assert np.array_equal(found, want_found) and np.array_equal(got, want_matrix)
        assert stats(cache) == stats(twin)
        cache.sync._check_invariants()

    asyncio.run(main())


def test_async_get_many_out_multi_slice() -> None:
    keys = keys_of(range(BIG_N))
    matrix = big_batch(seed=3)
    lookup = keys_of([*range(0, BIG_N, 2), *range(BIG_N, BIG_N + 1000), *range(1, BIG_N, 2)])

    async def main() -> None:
        cache = EmbeddingCache(BIG_N, max_memory_mb=40.0)
        await cache.put_many(keys, matrix)
        out = np.full((len(lookup), BIG_DIM), -1.0, np.float32)
        (got, found), ticks = await ticks_during(cache.get_many(lookup, out=out))
        assert got is out and ticks >= 4
        half = BIG_N // 2
        assert found.tolist() == [True] * half + [False] * 1000 + [True] * half
        assert np.array_equal(out[:half], matrix[::2])
        assert not out[half : half + 1000].any()
        assert np.array_equal(out[half + 1000 :], matrix[1::2])
        got_info = info(cache)
        assert (got_info["hits"], got_info["misses"]) == (BIG_N, 1000)

    asyncio.run(main())


def test_async_get_many_all_misses_any_dim_large() -> None:
    async def main() -> None:
        cache = EmbeddingCache(10)
        await cache.put(key("x"), vec(1, 8))
        got, found = await cache.get_many(keys_of(range(BIG_N)))
        assert got.shape == (BIG_N, 0) and not found.any()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("n", "dtype", "value", "message"),
    [
        (BIG_N, np.float32, np.nan, "is nan"),
        (2000, np.float32, np.nan, "is nan"),
        (2000, np.float64, 1e39, r"= 1e\+39 overflows float32"),
        (2000, np.float16, np.inf, "is inf"),
        (2000, ">f4", -np.inf, "is -inf"),
    ],
    ids=["6000-f32-nan", "f32-nan", "f64-overflow", "f16-inf", "be-f4-inf"],
)
def test_async_put_many_bad_last_row_stores_nothing(
    n: int, dtype: Any, value: float, message: str
) -> None:
    matrix = big_batch(n).astype(dtype)
    matrix[-1, -1] = value
    assert n * BIG_DIM * 4 > 2 * SLICE_BYTES
    old = keys_of(range(-5, 0))
    batch = keys_of(range(-5, n - 5))  # overwrites the five old keys first

    async def main() -> None:
        cache = EmbeddingCache(n + 10, max_memory_mb=40.0)
        for i, k in enumerate(old):
            await cache.put(k, vec(i, BIG_DIM))
        before = snapshot(cache, old)
        with pytest.raises(
            InvalidVectorError, match=rf"matrix\[{n - 1}, {BIG_DIM - 1}\] {message}"
        ):
            await cache.put_many(batch, matrix)
        assert_unchanged(cache, before)
        assert len(cache) == len(old)
        assert not any(k in cache for k in batch[len(old) :])

    asyncio.run(main())


@pytest.mark.parametrize("dim", [None, BIG_DIM])
def test_async_get_many_bad_key_in_later_slice(dim: int | None) -> None:
    async def main() -> None:
        cache = EmbeddingCache(100, max_memory_mb=40.0, dim=dim)
        for i in range(10):
            await cache.put(key(i), vec(i, BIG_DIM))
        lookup: list[Any] = keys_of(range(BIG_N))
        lookup[5000] = "hash-5000"
        before = snapshot(cache, keys_of(range(10)))
        with pytest.raises(KeyTypeError, match=r"keys\[5000\] must be a CacheKey, got str"):
            await cache.get_many(lookup)
        with pytest.raises(KeyTypeError, match=r"keys\[5000\]"):
            await cache.get_many(lookup, out=np.zeros((BIG_N, BIG_DIM), np.float32))
        assert_unchanged(cache, before)

    asyncio.run(main())


def test_async_put_many_bad_key_in_later_slice() -> None:
    async def main() -> None:
        cache = EmbeddingCache(BIG_N + 10, max_memory_mb=40.0)
        await cache.put(key(0), vec(0, BIG_DIM))
        batch: list[Any] = keys_of(range(BIG_N))
        batch[-1] = None
        before = snapshot(cache, [key(0), key(1)])
        with pytest.raises(KeyTypeError, match=rf"keys\[{BIG_N - 1}\] must be a CacheKey"):
            await cache.put_many(batch, big_batch())
        assert_unchanged(cache, before)

    asyncio.run(main())


# The facade slices `out` row-wise: everything a slice cannot see (the total row
# count, contiguity across slices, the hits' dimension in other slices) must
# still be checked before the first slice runs.
ASYNC_N = 2000
ASYNC_BAD_OUTS = [
    pytest.param(lambda: np.zeros((ASYNC_N - 1, BIG_DIM), np.float32), ValueError, id="rows-1"),
    pytest.param(lambda: np.zeros((ASYNC_N + 1, BIG_DIM), np.float32), ValueError, id="rows+1"),
    pytest.param(lambda: np.zeros((ASYNC_N - 700, BIG_DIM), np.float32), ValueError, id="rows-700"),
    pytest.param(lambda: np.zeros((ASYNC_N, BIG_DIM), np.float64), TypeError, id="float64"),
    pytest.param(lambda: _readonly(np.zeros((ASYNC_N, BIG_DIM), np.float32)), TypeError, id="ro"),
    pytest.param(lambda: np.zeros((ASYNC_N, BIG_DIM), np.float32, order="F"), TypeError, id="F"),
    pytest.param(lambda: np.zeros((ASYNC_N, BIG_DIM + 1), np.float32), ValueError, id="dim+1"),
    pytest.param(lambda: np.zeros(ASYNC_N * BIG_DIM, np.float32), TypeError, id="1-D"),
    pytest.param(lambda: [[0.0] * 4], TypeError, id="list"),
]


@pytest.mark.parametrize(("make_out", "exc"), ASYNC_BAD_OUTS)
@pytest.mark.parametrize("dim", [None, BIG_DIM])
def test_async_get_many_rejects_bad_out_before_any_slice(
    dim: int | None, make_out: Callable[[], Any], exc: type
) -> None:
    keys = keys_of(range(ASYNC_N))

    async def main() -> None:
        cache = EmbeddingCache(ASYNC_N, max_memory_mb=40.0, dim=dim)
        await cache.put_many(keys, big_batch(ASYNC_N))
        before = snapshot(cache, keys[:3] + keys[-3:])
        with pytest.raises(exc):
            await cache.get_many(keys, out=make_out())
        assert_unchanged(cache, before)

    asyncio.run(main())


def test_async_get_many_out_dim_checked_against_hits_in_later_slices() -> None:
    async def main() -> None:
        cache = EmbeddingCache(10)
        await cache.put(key("x"), vec(1, 5))
        lookup = [*keys_of(range(ASYNC_N)), key("x")]  # misses first, the hit last
        before = snapshot(cache, [key("x")])
        out = np.zeros((len(lookup), BIG_DIM), np.float32)
        with pytest.raises(DimensionMismatchError, match="out has 768 columns.*entries have dim 5"):
            await cache.get_many(lookup, out=out)
        assert_unchanged(cache, before)

    asyncio.run(main())


def test_async_get_many_mixed_dims_across_slices_with_out() -> None:
    keys = keys_of(range(ASYNC_N))

    async def main() -> None:
        cache = EmbeddingCache(ASYNC_N + 1, max_memory_mb=40.0)
        await cache.put_many(keys, big_batch(ASYNC_N))
        await cache.put(key("odd"), vec(1, 5))
        lookup = [*keys, key("odd")]
        before = snapshot(cache, [*keys[:3], key("odd")])
        with pytest.raises(DimensionMismatchError, match=r"2 different dimensions \(768, 5\)"):
            await cache.get_many(lookup, out=np.zeros((len(lookup), BIG_DIM), np.float32))
        with pytest.raises(DimensionMismatchError, match=r"2 different dimensions \(768, 5\)"):
            await cache.get_many(lookup)
        assert_unchanged(cache, before)

    asyncio.run(main())


def test_async_get_many_rejects_non_contiguous_out_with_one_row_slices() -> None:
    dim = SLICE_BYTES // 4  # one row per slice

    async def main() -> None:
        cache = EmbeddingCache(4, max_memory_mb=10.0)
        await cache.put(key(0), np.ones(dim, np.float32))
        await cache.put(key(1), np.ones(dim, np.float32))
        out = np.zeros((4, dim), np.float32)[::2]
        assert not out.flags.c_contiguous
        before = snapshot(cache)
        with pytest.raises(TypeError, match="C-contiguous"):
            await cache.get_many([key(0), key(1)], out=out)
        assert_unchanged(cache, before)

    asyncio.run(main())


# --- a model-based property test ----------------------------------------------------------

IDS = st.integers(0, 11)
DIMS = st.sampled_from([2, 3])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put_many"), st.lists(IDS, max_size=8), DIMS),
        st.tuples(st.just("get_many"), st.lists(IDS, max_size=8), st.just(0)),
        st.tuples(st.just("put"), st.lists(IDS, min_size=1, max_size=1), DIMS),
        st.tuples(st.just("get"), st.lists(IDS, min_size=1, max_size=1), st.just(0)),
        st.tuples(st.just("remove"), st.lists(IDS, min_size=1, max_size=1), st.just(0)),
    ),
    max_size=14,
)


class Model:
    """A dict in LRU order (oldest first) of id -> (value, dim), with the stats."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.data: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self.stats = dict.fromkeys(("hits", "misses", "puts", "overwrites", "evictions"), 0)
        self.stats["removals"] = 0

    def put(self, i: int, value: int, dim: int) -> None:
        self.stats["puts"] += 1
        if i in self.data:
            self.stats["overwrites"] += 1
            del self.data[i]
        elif len(self.data) >= self.max_entries:
            self.data.popitem(last=False)
            self.stats["evictions"] += 1
        self.data[i] = (value, dim)

    def get(self, i: int) -> np.ndarray | None:
        if i not in self.data:
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        self.data.move_to_end(i)
        value, dim = self.data[i]
        return vec(value, dim)

    def remove(self, i: int) -> bool:
        if i in self.data:
            self.stats["removals"] += 1
            del self.data[i]
            return True
        return False


@settings(max_examples=100, deadline=None)
@given(
    max_entries=st.integers(1, 10),
    fixed=st.booleans(),
    prefill=st.lists(IDS, max_size=6),
    ops=OPS,
)
def test_batches_match_model_and_single_key_api(
    max_entries: int, fixed: bool, prefill: list[int], ops: list[tuple[str, list[int], int]]
) -> None:
    fixed_dim = 3 if fixed else None
    cache = SyncEmbeddingCache(max_entries, max_memory_mb=1.0, dim=fixed_dim)
    twin = SyncEmbeddingCache(max_entries, max_memory_mb=1.0, dim=fixed_dim)
    model = Model(max_entries)
    counter = 0

    def check() -> None:
        got = info(cache)
        assert stats(cache) == stats(twin)
        assert {name: got[name] for name in model.stats} == model.stats
        assert got["size"] == len(model.data)
        cache._check_invariants()

    if prefill:
        values = list(range(counter, counter + len(prefill)))
        counter += len(prefill)
        cache.put_many(keys_of(prefill), rows(values, 3))
        for i, v in zip(prefill, values):
            twin.put(key(i), vec(v, 3))
            model.put(i, v, 3)
        check()

    for op, ids, dim in ops:
        dim = fixed_dim or dim
        batch = keys_of(ids)
        if op in ("put_many", "put"):
            values = list(range(counter, counter + len(ids)))
            counter += len(ids)
            matrix = rows(values, dim)
            if op == "put_many":
                cache.put_many(batch, matrix)
            else:
                cache.put(batch[0], matrix[0])
            for k, i, v in zip(batch, ids, values):
                twin.put(k, vec(v, dim))
                model.put(i, v, dim)
        elif op == "get_many":
            live_dims = {model.data[i][1] for i in ids if i in model.data}
            if len(live_dims) > 1:
                with pytest.raises(DimensionMismatchError, match="2 different dimensions"):
                    cache.get_many(batch)
            else:
                matrix, found = cache.get_many(batch)
                width = live_dims.pop() if live_dims else (fixed_dim or 0)
                assert matrix.shape == (len(ids), width) and matrix.flags.c_contiguous
                expected = [model.get(i) for i in ids]
                assert_matches_single_gets(matrix, found, expected)
                assert_matches_single_gets(matrix, found, [twin.get(k) for k in batch])
        elif op == "get":
            got_one = cache.get(batch[0])
            want = model.get(ids[0])
            twin_one = twin.get(batch[0])
            assert (got_one is None) == (want is None) == (twin_one is None)
            if want is not None:
                assert np.array_equal(got_one, want) and np.array_equal(twin_one, want)
        else:
            removed = model.remove(ids[0])
            assert cache.remove(batch[0]) is removed
            assert twin.remove(batch[0]) is removed
        check()

    # the final contents, read through get_many, agree with the model
    for d in {dim for _, dim in model.data.values()}:
        ids = [i for i, (_, dd) in model.data.items() if dd == d]
        matrix, found = cache.get_many(keys_of(ids))
        assert found.all()
        assert np.array_equal(matrix, np.stack([vec(model.data[i][0], d) for i in ids]))
