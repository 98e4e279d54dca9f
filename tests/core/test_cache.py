"""SyncEmbeddingCache, what is particular to the core: construction and
CacheInfo, key identity, dtype conversions, returned arrays, strided inputs,
removal in any order, memory accounting and mixed dimensions. The contract every
cache kind shares (put/get, overwrite, remove, clear, len/in, TTL, bounds,
counts) is tests/contract/."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import MIB, OVERHEAD, entry_bytes, key, vec

import embcache
from embcache import CacheInfo, CacheKey, SyncEmbeddingCache

# --- construction and CacheInfo --------------------------------------------------------


def test_defaults() -> None:
    c = SyncEmbeddingCache()
    info = c.get_cache_info()
    assert info.max_entries == 100_000
    assert info.ttl_seconds is None
    assert info.max_memory_mb == 512.0
    assert info.dim is None
    assert (c.max_entries, c.max_memory_mb, c.ttl_seconds, c.dim) == (100_000, 512.0, None, None)
    c._check_invariants()


def test_info_of_an_empty_cache() -> None:
    c = SyncEmbeddingCache(10, 60.0, 2.5, dim=8)
    info = c.get_cache_info()
    assert isinstance(info, CacheInfo)
    assert info.size == 0
    assert info.max_entries == 10
    assert info.memory_usage_bytes == 0
    assert info.memory_usage_mb == 0.0
    assert info.max_memory_mb == 2.5
    assert (info.hits, info.misses, info.hit_rate) == (0, 0, 0.0)
    assert (info.evictions, info.expirations, info.puts, info.overwrites, info.removals) == (
        0, 0, 0, 0, 0,
    )
    assert info.ttl_seconds == 60.0
    assert info.dim == 8
    assert info.dims == ()
    assert info.entry_overhead_bytes == OVERHEAD == embcache.ENTRY_OVERHEAD_BYTES
    assert info.memory_budget_bytes == math.floor(2.5 * MIB)
    assert info.allocated_bytes > 0
    assert (c.max_entries, c.max_memory_mb, c.ttl_seconds, c.dim) == (10, 2.5, 60.0, 8)


def test_info_is_a_frozen_snapshot() -> None:
    c = SyncEmbeddingCache(4)
    info = c.get_cache_info()
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.size = 3  # type: ignore[misc]
    c.put(key(1), [1.0])
    assert info.size == 0
    assert c.get_cache_info().size == 1


def test_info_has_every_documented_field() -> None:
    names = {f.name for f in dataclasses.fields(CacheInfo)}
    assert names >= {
        "size", "max_entries", "memory_usage_bytes", "memory_usage_mb", "max_memory_mb",
        "hits", "misses", "hit_rate", "evictions", "expirations", "puts", "overwrites",
        "removals", "ttl_seconds", "dim", "dims", "entry_overhead_bytes",
        "memory_budget_bytes", "allocated_bytes",
    }


def test_overhead_is_small() -> None:
    # the design goal: metadata per entry beyond the payload <= 128 bytes
    assert 0 < OVERHEAD <= 128


@pytest.mark.parametrize("mb", [0.001, 1, 1.5, 3.3, 100.0, 512.0])
def test_memory_budget_bytes_is_floor(mb: float) -> None:
    info = SyncEmbeddingCache(max_memory_mb=mb).get_cache_info()
    assert info.memory_budget_bytes == math.floor(mb * MIB)
    assert info.max_memory_mb == mb


def test_inf_ttl_never_expires(clock) -> None:  # type: ignore[no-untyped-def]
    c = SyncEmbeddingCache(4, math.inf, clock=clock)
    c.put(key(1), [1.0])
    clock.advance(1e300)
    assert c.get(key(1)) is not None
    assert c.get_cache_info().ttl_seconds == math.inf
    c._check_invariants()


def test_repr() -> None:
    c = SyncEmbeddingCache(5, None, 1.0, dim=3)
    c.put(key(1), [1, 2, 3])
    r = repr(c)
    assert r.startswith("SyncEmbeddingCache(")
    assert "size=1" in r and "max_entries=5" in r and "dim=3" in r


# --- put / get ------------------------------------------------------------------------------


def test_keys_by_value_not_identity(cache: SyncEmbeddingCache) -> None:
    cache.put(CacheKey("h", "m", "c"), [1.0, 2.0])
    out = cache.get(CacheKey("h", "m", "c"))
    assert out is not None and out.tolist() == [1.0, 2.0]
    assert cache.get(CacheKey("h", "m")) is None
    assert cache.get(CacheKey("h", "m", "")) is None
    assert cache.get(CacheKey("h", "m2", "c")) is None


def test_none_and_empty_chunk_are_separate_entries(cache: SyncEmbeddingCache) -> None:
    cache.put(CacheKey("h", "m", None), [1.0])
    cache.put(CacheKey("h", "m", ""), [2.0])
    assert len(cache) == 2
    assert cache.get(CacheKey("h", "m", None)).tolist() == [1.0]  # type: ignore[union-attr]
    assert cache.get(CacheKey("h", "m", "")).tolist() == [2.0]  # type: ignore[union-attr]


def test_ambiguous_concatenations_are_separate_entries(cache: SyncEmbeddingCache) -> None:
    cache.put(CacheKey("a:b", "c"), [1.0])
    cache.put(CacheKey("a", "b:c"), [2.0])
    assert cache.get(CacheKey("a:b", "c")).tolist() == [1.0]  # type: ignore[union-attr]
    assert cache.get(CacheKey("a", "b:c")).tolist() == [2.0]  # type: ignore[union-attr]


def test_returned_array_is_new_writable_and_independent(cache: SyncEmbeddingCache) -> None:
    cache.put(key(1), [1.0, 2.0, 3.0])
    a = cache.get(key(1))
    b = cache.get(key(1))
    assert a is not None and b is not None
    assert a is not b
    assert a.flags.writeable and a.flags.c_contiguous and a.flags.owndata
    assert not np.shares_memory(a, b)
    a[:] = 99.0
    assert b.tolist() == [1.0, 2.0, 3.0]
    assert cache.get(key(1)).tolist() == [1.0, 2.0, 3.0]  # type: ignore[union-attr]
    # the array outlives changes to the cache
    cache.put(key(1), [7.0, 8.0, 9.0])
    cache.clear()
    assert b.tolist() == [1.0, 2.0, 3.0]
    del cache
    assert b.sum() == 6.0


def test_returned_arrays_outlive_evicted_rows() -> None:
    c = SyncEmbeddingCache(2, dim=3)
    c.put(key(0), vec(0, 3))
    out = c.get(key(0))
    for i in range(1, 10):
        c.put(key(i), vec(i, 3))
    np.testing.assert_array_equal(out, vec(0, 3))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "dtype",
    [np.float16, np.float32, np.float64, np.longdouble, np.int8, np.int16, np.int32,
     np.int64, np.uint8, np.uint16, np.uint32, np.uint64],
)
def test_real_dtypes_are_converted_to_float32(cache: SyncEmbeddingCache, dtype) -> None:  # type: ignore[no-untyped-def]
    src = np.array([0, 1, 2, 100, 7], dtype=dtype)
    cache.put(key(1), src)
    out = cache.get(key(1))
    assert out is not None and out.dtype == np.float32
    np.testing.assert_array_equal(out, src.astype(np.float32))


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", ">f8", ">f2", ">i4", ">i8", ">u2"])
def test_byte_order_is_respected(cache: SyncEmbeddingCache, dtype: str) -> None:
    src = np.array([1.5, -2.0, 3.25, 100.0] if "f" in dtype else [1, 2, 3, 100], dtype=dtype)
    cache.put(key(dtype), src)
    out = cache.get(key(dtype))
    assert out is not None
    np.testing.assert_array_equal(out, src.astype(np.float32))
    cache._check_invariants()


def test_float64_rounds_to_nearest_float32(cache: SyncEmbeddingCache) -> None:
    src = np.array([0.1, 1 / 3, 1e-40, -1e-45, 3.4028234663852886e38, 1e-50])
    cache.put(key(1), src)
    np.testing.assert_array_equal(cache.get(key(1)), src.astype(np.float32))


def test_negative_zero_and_denormals(cache: SyncEmbeddingCache) -> None:
    src = np.array([-0.0, np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max,
                    -np.finfo(np.float32).max], dtype=np.float32)
    cache.put(key(1), src)
    out = cache.get(key(1))
    assert out is not None
    assert out.tobytes() == src.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.float16])
@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[::2],
        lambda a: a[::-1],
        lambda a: a[::-3],
        lambda a: a[1::5],
        lambda a: a.reshape(4, 6)[:, 2],
        lambda a: a.reshape(4, 6).T[3],
        lambda a: np.broadcast_to(a[3], (9,)),
        lambda a: np.lib.stride_tricks.as_strided(a, (6,), (a.strides[0] * 4,)),
    ],
    ids=["step2", "reversed", "step-3", "offset-step5", "column", "row-of-T", "stride0",
         "as_strided"],
)
def test_strided_views(cache: SyncEmbeddingCache, dtype, view) -> None:  # type: ignore[no-untyped-def]
    base = (np.arange(24) * 1.5 - 7).astype(dtype)
    v = view(base)
    assert v.ndim == 1
    cache.put(key(1), v)
    np.testing.assert_array_equal(cache.get(key(1)), np.ascontiguousarray(v).astype(np.float32))
    cache._check_invariants()


def test_unaligned_input(cache: SyncEmbeddingCache) -> None:
    for dtype in (np.float32, np.float64):
        want = np.arange(1, 9, dtype=dtype)
        raw = bytearray(want.nbytes + 1)
        raw[1:] = want.tobytes()
        v = np.frombuffer(raw, dtype=dtype, offset=1)
        assert not v.flags.aligned
        cache.put(key(1), v)
        np.testing.assert_array_equal(cache.get(key(1)), want.astype(np.float32))


def test_readonly_and_fortran_inputs(cache: SyncEmbeddingCache) -> None:
    v = np.arange(5, dtype=np.float32)
    v.flags.writeable = False
    cache.put(key(1), v)
    np.testing.assert_array_equal(cache.get(key(1)), v)
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3))[1]
    cache.put(key(2), f)
    np.testing.assert_array_equal(cache.get(key(2)), f.astype(np.float32))


def test_large_vector_round_trip() -> None:
    # >= 256 KiB rows take the GIL-free copy path
    dim = 300_000
    c = SyncEmbeddingCache(2, max_memory_mb=8.0, dim=dim)
    v = np.random.default_rng(1).standard_normal(dim).astype(np.float32)
    c.put(key(1), v)
    np.testing.assert_array_equal(c.get(key(1)), v)
    c.put(key(1), v.astype(np.float64)[::-1])
    np.testing.assert_array_equal(c.get(key(1)), v[::-1])
    c._check_invariants()


def test_dim_one() -> None:
    c = SyncEmbeddingCache(3, dim=1)
    c.put(key(1), [5])
    assert c.get(key(1)).tolist() == [5.0]  # type: ignore[union-attr]
    c._check_invariants()


# --- remove / clear ------------------------------------------------------------------------


def test_remove_every_key_in_many_orders() -> None:
    rng = np.random.default_rng(7)
    c = SyncEmbeddingCache(200, dim=2)
    keys = [key(i) for i in range(150)]
    for round_ in range(5):
        for i, k in enumerate(keys):
            c.put(k, [i, round_])
        order = rng.permutation(len(keys))
        for j, idx in enumerate(order):
            assert c.remove(keys[idx]) is True
            if j % 37 == 0:
                c._check_invariants()
                for other in order[j + 1:j + 5]:
                    assert c.get(keys[other]).tolist() == [other, round_]  # type: ignore[union-attr]
        assert len(c) == 0
        c._check_invariants()


def test_clear_returns_slab_memory_without_fixed_dim() -> None:
    c = SyncEmbeddingCache(1000, max_memory_mb=4.0)
    empty = c.get_cache_info().allocated_bytes
    for i in range(500):
        c.put(key(i), vec(i, 256))
    assert c.get_cache_info().allocated_bytes > 500 * 256 * 4
    c.clear()
    assert c.get_cache_info().allocated_bytes <= empty + 4096
    c._check_invariants()


# --- memory accounting ----------------------------------------------------------------------


def test_memory_accounting_exact_one_dim() -> None:
    c = SyncEmbeddingCache(1000, dim=768)
    for i in range(1, 101):
        c.put(key(i), vec(i, 768))
        info = c.get_cache_info()
        assert info.memory_usage_bytes == i * entry_bytes(768)
        assert info.memory_usage_mb == info.memory_usage_bytes / MIB
    c._check_invariants()


def test_memory_accounting_exact_mixed_dims() -> None:
    c = SyncEmbeddingCache(1000, max_memory_mb=8.0)
    rng = np.random.default_rng(3)
    live: dict[int, int] = {}
    for step in range(2000):
        i = int(rng.integers(0, 150))
        action = rng.random()
        if action < 0.6:
            d = int(rng.choice([1, 3, 16, 100, 384, 769]))
            c.put(key(i), np.full(d, i, np.float32))
            live[i] = d
        elif action < 0.8:
            assert c.remove(key(i)) is (i in live)
            live.pop(i, None)
        else:
            out = c.get(key(i))
            if i in live:
                assert out is not None and out.shape == (live[i],) and (out == i).all()
            else:
                assert out is None
        if step % 100 == 0:
            c._check_invariants()
    info = c.get_cache_info()
    assert info.size == len(live)
    assert info.memory_usage_bytes == sum(entry_bytes(d) for d in live.values())
    assert info.dims == tuple(sorted(set(live.values())))
    assert info.evictions == 0
    c._check_invariants()


@pytest.mark.parametrize("mb", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("dim", [1, 7, 128, 768])
def test_allocation_bounded_by_budget_with_one_dim(mb: float, dim: int) -> None:
    for fixed in (dim, None):
        c = SyncEmbeddingCache(100_000, max_memory_mb=mb, dim=fixed)
        budget = c.get_cache_info().memory_budget_bytes
        if entry_bytes(dim) > budget:
            continue
        for i in range(budget // entry_bytes(dim) + 50):
            c.put(key(i), np.full(dim, 1.0, np.float32))
        info = c.get_cache_info()
        assert info.memory_usage_bytes <= info.memory_budget_bytes
        assert info.memory_usage_bytes == info.size * entry_bytes(dim)
        assert info.size == budget // entry_bytes(dim)
        assert info.allocated_bytes <= budget + 4096
        c._check_invariants()


def test_memory_never_exceeds_budget_with_mixed_dims() -> None:
    c = SyncEmbeddingCache(10_000, max_memory_mb=0.25)
    rng = np.random.default_rng(11)
    for i in range(3000):
        d = int(rng.choice([8, 64, 500, 2000]))
        c.put(key(i), np.full(d, 0.5, np.float32))
        info = c.get_cache_info()
        assert info.memory_usage_bytes <= info.memory_budget_bytes
    c._check_invariants()


def test_dims_field_tracks_live_dimensions() -> None:
    c = SyncEmbeddingCache(10)
    c.put(key(1), vec(1, 3))
    c.put(key(2), vec(2, 5))
    c.put(key(3), vec(3, 3))
    assert c.get_cache_info().dims == (3, 5)
    c.remove(key(2))
    assert c.get_cache_info().dims == (3,)
    c.remove(key(1))
    c.remove(key(3))
    assert c.get_cache_info().dims == ()
    c._check_invariants()


def test_many_dims_one_cache() -> None:
    c = SyncEmbeddingCache(500, max_memory_mb=2.0)
    for d in range(1, 60):
        c.put(key(d), np.full(d, d, np.float32))
    for d in range(1, 60):
        out = c.get(key(d))
        assert out is not None and out.shape == (d,) and (out == d).all()
    assert c.get_cache_info().dims == tuple(range(1, 60))
    c._check_invariants()


def test_growth_through_many_entries() -> None:
    # the entry table, index and slab grow by doubling without fixed dim
    c = SyncEmbeddingCache(5000, max_memory_mb=64.0)
    for i in range(5000):
        c.put(key(i), [float(i), -float(i)])
        if i in (63, 64, 65, 127, 128, 1023, 1024, 4999):
            c._check_invariants()
    for i in range(0, 5000, 7):
        assert c.get(key(i)).tolist() == [i, -i]  # type: ignore[union-attr]
    assert c.get_cache_info().evictions == 0
