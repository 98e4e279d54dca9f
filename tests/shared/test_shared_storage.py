"""SharedEmbeddingCache under storage="float16" / "bfloat16" / "int8": rows hold the
encoding (the bytes SyncEmbeddingCache's rows take), every read returns the
codec's round trip, a value the storage cannot hold is refused exactly as
SyncEmbeddingCache refuses it with nothing changed, the accounting follows the
row bytes, and processes see each other's rows bit for bit."""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from segments import fresh_segment_name, key_of, vector_of

from embcache import (
    ArgumentValueError,
    DimensionMismatchError,
    InvalidVectorError,
    SharedEmbeddingCache,
    SyncEmbeddingCache,
    VectorTypeError,
)
from embcache._core import decode_rows, encode_rows, row_bytes
from embcache.shared import ENTRY_OVERHEAD_BYTES

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

STORAGES = ["float32", "float16", "bfloat16", "int8"]
COMPACT = ["float16", "bfloat16", "int8"]
DIM = 40


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


def round_trip(rows: np.ndarray, storage: str) -> np.ndarray:
    """What `storage` gives back for float32 `rows` (the core's codec)."""
    rows = np.ascontiguousarray(np.atleast_2d(rows), dtype=np.float32)
    return decode_rows(encode_rows(rows, storage), storage, rows.shape[1])


def spread_vector(i: int, dim: int) -> np.ndarray:
    """A vector of key i with values over many binades (subnormal float16
    included), so each codec rounds something."""
    v = vector_of(i, dim) * np.float32(10.0) ** np.linspace(-7, 4, dim, dtype=np.float32)
    return v.astype(np.float32)


@pytest.mark.parametrize("storage", STORAGES)
def test_every_read_is_the_codecs_round_trip(segment_name: str, storage: str) -> None:
    keys = [key_of(i) for i in range(60)]
    rows = np.stack([spread_vector(i, DIM) for i in range(60)])
    want = round_trip(rows, storage)
    if storage != "float32":
        assert not np.array_equal(want, rows)  # the codec rounds: the test can tell
    with SharedEmbeddingCache(segment_name, 1000, None, 8, dim=DIM, storage=storage) as cache:
        for i in range(30):
            cache.put(keys[i], rows[i])
        cache.put_many(keys[30:], rows[30:])
        for i in range(60):
            got = cache.get(keys[i])
            assert got is not None and got.dtype == np.float32
            assert got.tobytes() == want[i].tobytes(), i
        matrix, found = cache.get_many([*keys, key_of(999)])
        assert found.tolist() == [True] * 60 + [False]
        assert matrix[:60].tobytes() == want.tobytes() and not matrix[60].any()
        out = np.full((61, DIM), 7.0, np.float32)
        same, _ = cache.get_many([*keys, key_of(999)], out=out)
        assert same is out and out[:60].tobytes() == want.tobytes() and not out[60].any()
        computed = cache.get_or_compute(
            [keys[0], key_of(500), key_of(501), key_of(500)],
            lambda missing: np.stack([spread_vector(500 + j, DIM) for j in range(len(missing))]),
        )
        fresh = round_trip(np.stack([spread_vector(500, DIM), spread_vector(501, DIM)]), storage)
        assert computed[0].tobytes() == want[0].tobytes()
        assert computed[1].tobytes() == computed[3].tobytes() == fresh[0].tobytes()
        assert computed[2].tobytes() == fresh[1].tobytes()
        assert cache.get(key_of(501)).tobytes() == fresh[1].tobytes()  # type: ignore[union-attr]
        assert cache.verify() == []


@pytest.mark.parametrize("storage", STORAGES)
def test_same_answers_as_the_in_process_cache(segment_name: str, storage: str) -> None:
    rows = np.stack([spread_vector(i, DIM) for i in range(20)])
    sync = SyncEmbeddingCache(1000, None, 8, dim=DIM, storage=storage)
    with SharedEmbeddingCache(segment_name, 1000, None, 8, dim=DIM, storage=storage) as cache:
        for i in range(20):
            sync.put(key_of(i), rows[i].astype(np.float64))  # float64 in: rounded once
            cache.put(key_of(i), rows[i].astype(np.float64))
        a, _ = sync.get_many([key_of(i) for i in range(20)])
        b, _ = cache.get_many([key_of(i) for i in range(20)])
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("storage", STORAGES)
def test_row_bytes_accounting_and_limits_follow_the_storage(
    segment_name: str, storage: str
) -> None:
    per_entry = row_bytes(storage, DIM) + ENTRY_OVERHEAD_BYTES
    budget_mb = 300 * per_entry / 2**20  # room for 300 entries of this storage
    with SharedEmbeddingCache(
        segment_name, 10_000, None, budget_mb, dim=DIM, storage=storage
    ) as cache:
        assert cache.storage == storage
        assert cache.capacity == 300
        for i in range(400):
            cache.put(key_of(i), vector_of(i, DIM))
        info = cache.get_cache_info()
        assert info.storage == storage and info.size == 300 == len(cache)
        assert info.memory_usage_bytes == 300 * per_entry
        assert info.memory_usage_bytes <= info.memory_budget_bytes
        assert info.evictions == 100


CASES = {
    "float16": [
        (
            np.array([1.0, 70000.0] + [0.0] * (DIM - 2), np.float32),
            "vector[1] = 70000.0 overflows float16",
        ),
        (
            np.array([65504.0, -65520.0] + [0.0] * (DIM - 2)),
            "vector[1] = -65520.0 overflows float16",
        ),
    ],
    "bfloat16": [
        (np.array([0.0, 3.4e38] + [0.0] * (DIM - 2), np.float32), "overflows bfloat16"),
    ],
}


def state(cache: SharedEmbeddingCache) -> tuple[object, ...]:
    """What a refused call must leave as it was (lookups' counters aside)."""
    info = cache.get_cache_info()
    matrix, found = cache.get_many([key_of(i) for i in range(4)])
    return (
        info.size,
        info.puts,
        info.overwrites,
        info.evictions,
        info.memory_usage_bytes,
        matrix.tobytes(),
        found.tolist(),
    )


@pytest.mark.parametrize("storage", STORAGES)
def test_values_the_storage_cannot_hold_are_refused_as_the_core_refuses_them(
    segment_name: str, storage: str
) -> None:
    sync = SyncEmbeddingCache(1000, None, 8, dim=DIM, storage=storage)
    bad_vectors: list[object] = [v for v, _ in CASES.get(storage, [])]
    bad_vectors += [
        [float("nan")] + [0.0] * (DIM - 1),
        np.array([0.0, float("-inf")] + [0.0] * (DIM - 2), np.float32),
        np.array([1e300] + [0.0] * (DIM - 1)),
        [1.0] * (DIM - 1),
        [[1.0] * DIM],
        [],
        ["a"] * DIM,
        None,
    ]
    cache = SharedEmbeddingCache(segment_name, 1000, None, 8, dim=DIM, storage=storage)
    with cache:
        cache.put(key_of(1), vector_of(1, DIM))
        before = state(cache)
        for bad in bad_vectors:
            with pytest.raises(Exception) as core_error:
                sync.put(key_of(1), bad)
            with pytest.raises(type(core_error.value)) as ours:
                cache.put(key_of(1), bad)
            assert str(ours.value) == str(core_error.value)
            assert isinstance(
                ours.value, (InvalidVectorError, VectorTypeError, DimensionMismatchError)
            )
            matrix = np.stack([vector_of(2, DIM), np.zeros(DIM, np.float32)])
            if isinstance(bad, np.ndarray) and bad.shape == (DIM,):
                matrix = np.stack([vector_of(2, DIM).astype(bad.dtype), bad])
                with pytest.raises(Exception) as core_many:
                    sync.put_many([key_of(2), key_of(3)], matrix)
                with pytest.raises(type(core_many.value)) as ours_many:
                    cache.put_many([key_of(2), key_of(3)], matrix)
                assert str(ours_many.value) == str(core_many.value)
                assert "matrix[1, " in str(ours_many.value)
                with pytest.raises(type(core_many.value)):
                    cache.get_or_compute([key_of(2), key_of(3)], lambda missing, m=matrix: m)
        assert state(cache) == before
        assert key_of(2) not in cache and key_of(3) not in cache
    for vector, message in CASES.get(storage, []):  # the storage's own refusal, not another
        with pytest.raises(InvalidVectorError) as refused:
            cache_again = SharedEmbeddingCache.attach(segment_name)
            try:
                cache_again.put(key_of(1), vector)
            finally:
                cache_again.close()
        assert message in str(refused.value)


@pytest.mark.parametrize("storage", COMPACT)
def test_attaching_with_another_storage_is_refused_naming_the_field(
    segment_name: str, storage: str
) -> None:
    with SharedEmbeddingCache(segment_name, 100, None, 1, dim=8, storage=storage) as first:
        first.put(key_of(1), vector_of(1, 8))
        for other in STORAGES:
            if other == storage:
                continue
            with pytest.raises(
                ArgumentValueError, match=f"storage is '{storage}' there, '{other}' here"
            ):
                SharedEmbeddingCache(segment_name, 100, None, 1, dim=8, storage=other)
        with SharedEmbeddingCache.attach(segment_name) as attached:
            assert attached.storage == storage
            got = attached.get(key_of(1))
            assert got is not None
            assert got.tobytes() == round_trip(vector_of(1, 8), storage)[0].tobytes()


def check_and_add(name: str, storage: str, worker: int) -> tuple[int, int]:
    """In a spawned worker: read keys 0-99 (each must be the round trip), then add
    keys of its own; (matched, not matched)."""
    good = bad = 0
    with SharedEmbeddingCache(name, 4096, None, 16, dim=DIM, storage=storage) as cache:
        for i in range(100):
            got = cache.get(key_of(i))
            want = round_trip(spread_vector(i, DIM), storage)[0]
            if got is not None and got.tobytes() == want.tobytes():
                good += 1
            else:
                bad += 1
        mine = range(1000 + 100 * worker, 1100 + 100 * worker)
        cache.put_many([key_of(i) for i in mine], np.stack([spread_vector(i, DIM) for i in mine]))
    return good, bad


@pytest.mark.parametrize("storage", STORAGES)
def test_spawned_processes_see_rows_bit_exact(segment_name: str, storage: str) -> None:
    with SharedEmbeddingCache(segment_name, 4096, None, 16, dim=DIM, storage=storage) as cache:
        cache.put_many(
            [key_of(i) for i in range(100)], np.stack([spread_vector(i, DIM) for i in range(100)])
        )
        with mp.get_context("spawn").Pool(2) as pool:
            results = pool.starmap(check_and_add, [(segment_name, storage, w) for w in range(2)])
        assert results == [(100, 0)] * 2
        keys = [key_of(i) for i in range(1000, 1200)]
        matrix, found = cache.get_many(keys)
        assert found.all()
        want = round_trip(np.stack([spread_vector(i, DIM) for i in range(1000, 1200)]), storage)
        assert matrix.tobytes() == want.tobytes()
        assert cache.verify() == []


def test_get_many_counts_each_key_once(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, 10_000, None, 64, dim=8, storage="int8") as cache:
        assert cache.stripes > 1  # a batch spans stripes, each counted once per batch
        cache.put_many([key_of(i) for i in range(2000)], np.ones((2000, 8), np.float32))
        before = cache.get_cache_info()
        _, found = cache.get_many([key_of(i) for i in range(0, 4000, 2)] + [key_of(0)])
        info = cache.get_cache_info()
        assert int(found.sum()) == 1001
        assert (info.hits - before.hits, info.misses - before.misses) == (1001, 1000)
