"""storage=: rows held as float32, float16, bfloat16 or int8 encodings.

What a cache of each storage returns is the codec's round trip of what was put
(embcache._core.decode_rows(encode_rows(...)): the cache re-implements nothing),
whatever the input's dtype or strides; values a storage cannot hold are
rejected with the cache unchanged; memory is accounted exactly in each
storage's row bytes, so a budget holds more compact rows; the invariant walk
knows the row bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import OVERHEAD, assert_unchanged, key, snapshot, vec
from hypothesis import given, settings
from hypothesis import strategies as st

from embcache import (
    ArgumentTypeError,
    ArgumentValueError,
    CacheKey,
    EmbeddingCache,
    InvalidVectorError,
    SyncEmbeddingCache,
)
from embcache._core import decode_rows, encode_rows, row_bytes

STORAGES = ["float32", "float16", "bfloat16", "int8"]
COMPACT = STORAGES[1:]


def stored(rows: np.ndarray, storage: str) -> np.ndarray:
    """What a cache of `storage` gives back for float32 `rows` (n, dim)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return decode_rows(encode_rows(rows, storage), storage, rows.shape[1])


def sample(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


# -- the argument ------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_storage_is_reported_everywhere(storage: str) -> None:
    c = SyncEmbeddingCache(8, storage=storage)
    assert c.storage == storage
    assert c.get_cache_info().storage == storage
    assert f"storage={storage!r}" in repr(c)
    assert EmbeddingCache(8, storage=storage).storage == storage


def test_the_default_storage_is_float32() -> None:
    assert SyncEmbeddingCache(8).storage == "float32"
    assert EmbeddingCache(8).storage == "float32"


@pytest.mark.parametrize("bad", [None, 16, b"float16", np.float16, ["int8"]])
def test_a_storage_that_is_not_a_str_is_a_type_error(bad: object) -> None:
    with pytest.raises(ArgumentTypeError, match="storage must be a str"):
        SyncEmbeddingCache(8, storage=bad)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="storage must be a str"):
        EmbeddingCache(8, storage=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "float64", "FLOAT16", "fp16", "int4", "float16 "])
def test_an_unknown_storage_names_the_four(bad: str) -> None:
    with pytest.raises(ArgumentValueError) as err:
        SyncEmbeddingCache(8, storage=bad)
    for name in STORAGES:
        assert repr(name) in str(err.value)
    assert repr(bad) in str(err.value)


# -- what comes back -------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("dim", [None, 7])
def test_every_lookup_returns_the_codec_round_trip(storage: str, dim: int | None) -> None:
    m = sample(6, 7)
    want = stored(m, storage)
    c = SyncEmbeddingCache(64, dim=dim, storage=storage)
    keys = [key(i) for i in range(6)]
    c.put(keys[0], m[0])
    c.put_many(keys[1:4], m[1:4])
    batch = c.put_batch(keys[4:], m[4:])
    batch.take()
    batch.store()
    for i, k in enumerate(keys):
        got = c.get(k)
        assert got is not None and got.dtype == np.float32
        assert got.tobytes() == want[i].tobytes()
    matrix, found = c.get_many(keys + [key("absent")])
    assert found.tolist() == [True] * 6 + [False]
    assert matrix[:6].tobytes() == want.tobytes() and not matrix[6].any()
    out = np.full((6, 7), np.nan, np.float32)
    assert c.get_many(keys, out=out)[0] is out
    assert out.tobytes() == want.tobytes()
    reader = c.get_batch(keys)
    reader.read()
    assert reader.matrix.tobytes() == want.tobytes()
    computed = c.get_or_compute([key("new")], lambda missing: m[:1] * 2)
    assert computed.tobytes() == stored(m[:1] * 2, storage).tobytes()
    got = c.get(key("new"))
    assert got is not None and got.tobytes() == computed.tobytes()
    c._check_invariants()


@pytest.mark.parametrize("storage", STORAGES)
def test_any_dtype_and_strides_store_the_float32_conversion(storage: str) -> None:
    """float64, integers, strided views and lists store exactly what their float32
    conversion would: the compact row is encoded from float32 values."""
    base = np.random.default_rng(1).standard_normal(40) * 3
    c = SyncEmbeddingCache(64, storage=storage)
    sources = {
        "f64": base[:20],
        "f64-strided": base[::2],
        "f32-strided": base.astype(np.float32)[::2],
        "ints": np.arange(-9, 11, dtype=np.int64) * 1000,
        "list": [float(x) for x in base[:20]],
    }
    for name, src in sources.items():
        c.put(key(name), src)
        want = stored(np.asarray(src, dtype=np.float32)[None], storage)[0]
        got = c.get(key(name))
        assert got is not None and got.tobytes() == want.tobytes(), name
    c.put_many([key("m0"), key("m1")], base.reshape(2, 20))  # float64 rows
    m, _ = c.get_many([key("m0"), key("m1")])
    assert m.tobytes() == stored(base.reshape(2, 20), storage).tobytes()


@pytest.mark.parametrize("storage", COMPACT)
def test_an_overwrite_re_encodes_in_place(storage: str) -> None:
    c = SyncEmbeddingCache(8, dim=5, storage=storage)
    m = sample(2, 5)
    c.put(key(1), m[0])
    c.put(key(1), m[1])
    got = c.get(key(1))
    assert got is not None and got.tobytes() == stored(m[1:], storage)[0].tobytes()
    assert c.get_cache_info().overwrites == 1


def test_an_all_zero_int8_row_stays_exact() -> None:
    c = SyncEmbeddingCache(8, storage="int8")
    c.put(key(0), np.zeros(9))
    got = c.get(key(0))
    assert got is not None and got.tobytes() == np.zeros(9, np.float32).tobytes()


@pytest.mark.parametrize("storage", STORAGES)
@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.floats(-60000, 60000, allow_nan=False, width=32), min_size=5, max_size=5),
        min_size=1,
        max_size=12,
    ),
    dim_fixed=st.booleans(),
)
def test_round_trip_property(storage: str, rows: list[list[float]], dim_fixed: bool) -> None:
    """For any storable rows: the cache answers the codec's round trip of each,
    the last put of a key winning, and its accounting is exact."""
    m = np.array(rows, dtype=np.float32)
    c = SyncEmbeddingCache(100, dim=5 if dim_fixed else None, storage=storage)
    keys = [key(i % 4) for i in range(len(m))]
    for k, row in zip(keys, m):
        c.put(k, row)
    last = {k: i for i, k in enumerate(keys)}
    want = stored(m, storage)
    for k, i in last.items():
        got = c.get(k)
        assert got is not None and got.tobytes() == want[i].tobytes()
    info = c.get_cache_info()
    assert info.memory_usage_bytes == len(last) * (row_bytes(storage, 5) + OVERHEAD)
    c._check_invariants()


# -- values a storage cannot hold --------------------------------------------------------


OVERFLOWS = {
    "float16": [65520.0, -1e5, 3e38],
    "bfloat16": [3.4e38, -3.4e38, 3.397e38],
    "int8": [],  # int8 scales every finite float32 row: nothing overflows
}


@pytest.mark.parametrize(("storage", "value"), [(s, v) for s, vs in OVERFLOWS.items() for v in vs])
def test_a_value_beyond_the_storage_is_rejected_and_the_cache_unchanged(
    storage: str, value: float
) -> None:
    c = SyncEmbeddingCache(16, max_memory_mb=1.0, storage=storage)
    keys = [key(i) for i in range(3)]
    c.put_many(keys, sample(3, 6))
    before = snapshot(c, keys + [key("new")])
    bad = np.ones(6, np.float32)
    bad[4] = value
    with pytest.raises(InvalidVectorError, match=rf"vector\[4\] = .*{storage}") as err:
        c.put(key("new"), bad)
    assert "65504" in str(err.value) if storage == "float16" else True
    with pytest.raises(InvalidVectorError, match=rf"vector\[4\] = .*{storage}"):
        c.put(keys[0], bad.astype(np.float64))  # an overwrite, from float64
    with pytest.raises(InvalidVectorError, match=rf"vector\[4\] = .*{storage}"):
        c.put(keys[1], np.repeat(bad.astype(np.float64), 3)[::3])  # strided float64
    matrix = np.ones((3, 6))
    matrix[2, 4] = value
    with pytest.raises(InvalidVectorError, match=rf"matrix\[2, 4\] = .*{storage}"):
        c.put_many([keys[0], key("new"), keys[1]], matrix)
    batch = c.put_batch([key("new"), keys[2], key("x")], matrix)
    with pytest.raises(InvalidVectorError, match=rf"matrix\[2, 4\] = .*{storage}"):
        batch.take()
    assert_unchanged(c, before)
    with pytest.raises(InvalidVectorError, match=storage):
        c.get_or_compute([key("new")], lambda missing: matrix[2:])
    assert key("new") not in c  # the lookup counted its miss; nothing stored
    assert c.get_cache_info().memory_usage_bytes == before.info["memory_usage_bytes"]


@pytest.mark.parametrize("storage", COMPACT)
def test_the_first_unstorable_position_is_named(storage: str) -> None:
    """A value beyond the storage ahead of a NaN (or of a float64 beyond float32)
    is the one named: positions are judged in order, whatever the rule."""
    c = SyncEmbeddingCache(8, storage=storage)
    v = np.ones(300)
    v[290] = np.nan
    v[299] = 1e300
    if storage == "int8":
        with pytest.raises(InvalidVectorError, match=r"vector\[290\] is nan"):
            c.put(key(0), v)
        return
    v[270] = 3.4e38 if storage == "bfloat16" else 70000.0
    for src in (v, np.repeat(v, 2)[::2]):  # contiguous and strided float64
        with pytest.raises(InvalidVectorError, match=rf"vector\[270\] = .*{storage}"):
            c.put(key(0), src)
    assert len(c) == 0


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_infinity_are_rejected_as_always(storage: str, value: float) -> None:
    c = SyncEmbeddingCache(8, storage=storage)
    v = np.ones(5, np.float32)
    v[3] = value
    with pytest.raises(InvalidVectorError, match=r"vector\[3\] is .*finite"):
        c.put(key(0), v)
    with pytest.raises(InvalidVectorError, match=r"matrix\[0, 3\] is .*finite"):
        c.put_many([key(0)], v[None].astype(np.float64))
    assert len(c) == 0 and c.get_cache_info().memory_usage_bytes == 0


def test_int8_holds_the_largest_float32_values() -> None:
    c = SyncEmbeddingCache(8, storage="int8")
    v = np.array([3.4e38, -3.4e38, 1.0, 0.0], np.float32)
    c.put(key(0), v)
    got = c.get(key(0))
    assert got is not None and np.isfinite(got).all()
    assert got.tobytes() == stored(v[None], "int8")[0].tobytes()


# -- memory -------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_memory_is_row_bytes_plus_overhead_per_entry(storage: str) -> None:
    c = SyncEmbeddingCache(1000, max_memory_mb=4.0, storage=storage)
    dims = [1, 3, 7, 768]
    for i, d in enumerate(dims * 3):
        c.put(key(i), vec(i % 5, d) / 1000)
    info = c.get_cache_info()
    assert info.entry_overhead_bytes == OVERHEAD
    assert info.memory_usage_bytes == 3 * sum(row_bytes(storage, d) + OVERHEAD for d in dims)
    assert info.dims == tuple(dims)
    c.remove(key(0))
    c.remove(key(3))
    assert info.memory_usage_bytes - c.get_cache_info().memory_usage_bytes == (
        row_bytes(storage, 1) + row_bytes(storage, 768) + 2 * OVERHEAD
    )
    c._check_invariants()


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("dim", [None, 768])
def test_a_budget_holds_what_the_row_bytes_allow(storage: str, dim: int | None) -> None:
    budget_mb = 2.0
    c = SyncEmbeddingCache(1_000_000, max_memory_mb=budget_mb, dim=dim, storage=storage)
    per_entry = row_bytes(storage, 768) + OVERHEAD
    fits = int(budget_mb * 2**20) // per_entry
    m = sample(64, 768)
    for i in range(fits + 40):
        c.put(key(i), m[i % 64])
    info = c.get_cache_info()
    assert info.size == fits and info.evictions == 40
    assert info.memory_usage_bytes == fits * per_entry <= info.memory_budget_bytes
    c._check_invariants()


def test_compact_storages_hold_more_entries_in_the_same_budget() -> None:
    """At dim 768 in one budget: float16 holds at least 1.9x and int8 at least
    3.4x the entries float32 does (measured by filling each cache past its bound)."""
    held = {}
    m = sample(32, 768)
    for storage in STORAGES:
        c = SyncEmbeddingCache(1_000_000, max_memory_mb=8.0, dim=768, storage=storage)
        for i in range(12_000):
            c.put(key(i), m[i % 32])
        held[storage] = len(c)
        assert c.get_cache_info().evictions > 0
    assert held["float16"] >= 1.9 * held["float32"]
    assert held["bfloat16"] >= 1.9 * held["float32"]
    assert held["int8"] >= 3.4 * held["float32"]


@pytest.mark.parametrize("storage", COMPACT)
@pytest.mark.parametrize("dim", [1, 3, 5, 17])
def test_dense_rows_move_with_their_owner_at_any_row_size(storage: str, dim: int) -> None:
    """Rows of odd byte sizes (owner slots not 4-aligned) stay dense through
    evictions, removals and refills, each row still its own entry's encoding."""
    c = SyncEmbeddingCache(40, storage=storage)
    rng = np.random.default_rng(dim)
    truth: dict[CacheKey, bytes] = {}
    for step in range(400):
        k = key(int(rng.integers(0, 80)))
        if rng.random() < 0.25:
            c.remove(k)
            truth.pop(k, None)
            continue
        v = rng.standard_normal(dim).astype(np.float32)
        c.put(k, v)
        truth[k] = stored(v[None], storage)[0].tobytes()
        if step % 50 == 0:
            c._check_invariants()
    c._check_invariants()
    for k, want in truth.items():
        if k in c:
            got = c.get(k)
            assert got is not None and got.tobytes() == want
