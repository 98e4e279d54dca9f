"""The core's batch protocol (put_batch / get_batch) that the layers above use,
and the error contract of every entry point: each rejection is an EmbcacheError
and the matching built-in."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from conftest import assert_unchanged, key, snapshot, vec

from embcache import (
    ArgumentTypeError,
    ArgumentValueError,
    CacheKey,
    DimensionMismatchError,
    EmbcacheError,
    EmbeddingCache,
    GetBatch,
    InvalidKeyError,
    InvalidVectorError,
    KeyTypeError,
    PutBatch,
    SyncEmbeddingCache,
    VectorTypeError,
)
from embcache._core import as_key_tuple

# --- PutBatch -------------------------------------------------------------------------


def test_put_batch_checks_now_and_stores_nothing_until_store() -> None:
    c = SyncEmbeddingCache(100, None, 10)
    keys = [key(i) for i in range(5)]
    b = c.put_batch(keys, np.arange(20.0).reshape(5, 4))
    assert isinstance(b, PutBatch) and b.cache is c
    assert (b.n, b.dim, b.taken, len(b)) == (5, 4, 0, 5)
    assert len(c) == 0
    b.take(0, 2)
    b.take(2)
    assert b.taken == 5 and len(c) == 0
    b.store(0, 3)
    assert len(c) == 3
    b.store(3)
    assert len(c) == 5
    np.testing.assert_array_equal(c.get(keys[4]), np.arange(16.0, 20.0, dtype=np.float32))
    assert not b.rows.flags.writeable
    np.testing.assert_array_equal(b.rows, np.arange(20.0, dtype=np.float32).reshape(5, 4))
    c._check_invariants()


def test_put_batch_stores_what_it_took_not_what_the_buffer_holds_later() -> None:
    c = SyncEmbeddingCache(100, None, 10)
    buf = np.ones((3, 4), np.float32)
    b = c.put_batch([key(0), key(1), key(2)], buf)
    b.take()
    buf[1, 2] = math.nan  # written between the check and the store
    buf[2] = 7.0
    b.store()
    np.testing.assert_array_equal(c.get(key(1)), np.ones(4, np.float32))
    np.testing.assert_array_equal(c.get(key(2)), np.ones(4, np.float32))


def test_put_batch_is_bound_to_its_cache() -> None:
    a = SyncEmbeddingCache(100, None, 10, dim=4)
    other = SyncEmbeddingCache(100, None, 10, dim=8)
    b = a.put_batch([key(0)], np.ones((1, 4)))
    b.take()
    b.store()
    assert key(0) in a and key(0) not in other
    with pytest.raises(AttributeError):
        b.cache = other  # type: ignore[misc]
    with pytest.raises(TypeError):
        PutBatch()  # type: ignore[call-arg]
    other._check_invariants()


def test_put_batch_take_names_what_row_and_element() -> None:
    c = SyncEmbeddingCache(100, None, 10)
    m = np.ones((4, 3))
    m[2, 1] = math.inf
    b = c.put_batch([key(i) for i in range(4)], m, what="compute's result")
    with pytest.raises(InvalidVectorError, match=r"compute's result\[2, 1\] is inf"):
        b.take()
    assert b.taken == 0
    b.take(0, 2)  # rows before the bad one can still be taken
    with pytest.raises(InvalidVectorError, match=r"\[2, 1\]"):
        b.take(2)
    assert b.taken == 2
    with pytest.raises(ArgumentValueError, match="not among the taken rows"):
        b.store(0, 3)
    assert len(c) == 0


@pytest.mark.parametrize(
    ("start", "stop"), [(1, 2), (0, 5), (-1, 2), (2, 1)], ids=["gap", "past-end", "neg", "back"]
)
def test_put_batch_slices_must_follow_each_other(start: int, stop: int) -> None:
    c = SyncEmbeddingCache(100, None, 10)
    b = c.put_batch([key(i) for i in range(4)], np.ones((4, 3)))
    with pytest.raises(ArgumentValueError):
        b.take(start, stop)
    assert b.taken == 0


def test_put_batch_dim_rules() -> None:
    c = SyncEmbeddingCache(100, None, 10, dim=4)
    with pytest.raises(DimensionMismatchError, match="matrix has dim 3, but this cache stores dim"):
        c.put_batch([key(0)], np.ones((1, 3)))
    free = SyncEmbeddingCache(100, None, 10)
    with pytest.raises(DimensionMismatchError, match="x has dim 3, but this batch needs dim 5"):
        free.put_batch([key(0)], np.ones((1, 3)), what="x", dim=5)
    empty = free.put_batch([], [])
    assert (empty.n, empty.dim) == (0, 0)
    empty.take()
    empty.store()
    assert len(free) == 0


# --- GetBatch -------------------------------------------------------------------------


def test_get_batch_reads_in_slices_and_counts_only_when_read() -> None:
    c = SyncEmbeddingCache(100, None, 10)
    for i in range(4):
        c.put(key(i), vec(i))
    keys = [key(0), key(9), key(2), key(3)]
    b = c.get_batch(keys)
    assert isinstance(b, GetBatch) and (b.n, b.dim, b.read_count) == (4, 4, 0)
    info = c.get_cache_info()
    assert (info.hits, info.misses) == (0, 0)
    b.read(0, 2)
    b.read(2)
    assert b.found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(b.matrix[2], vec(2))
    np.testing.assert_array_equal(b.matrix[1], np.zeros(4, np.float32))
    info = c.get_cache_info()
    assert (info.hits, info.misses) == (3, 1)
    with pytest.raises(ArgumentValueError, match="do not continue"):
        b.read(0, 1)


def test_get_batch_entry_changed_to_another_dim_reads_as_a_miss() -> None:
    c = SyncEmbeddingCache(100, None, 10)
    c.put(key(0), vec(0, 4))
    c.put(key(1), vec(1, 4))
    b = c.get_batch([key(0), key(1)])
    c.put(key(1), vec(1, 6))  # between the decision and the read
    b.read()
    assert b.found.tolist() == [True, False]
    assert b.matrix.shape == (2, 4)
    c._check_invariants()


def test_get_batch_raises_before_anything_changes() -> None:
    c = SyncEmbeddingCache(100, None, 10)
    c.put(key(0), vec(0, 4))
    c.put(key(1), vec(1, 5))
    before = snapshot(c, [key(0), key(1)])
    with pytest.raises(DimensionMismatchError, match="2 different dimensions"):
        c.get_batch([key(0), key(1)])
    with pytest.raises(ArgumentTypeError):
        c.get_batch([key(0)], out=np.zeros((1, 4)))  # float64
    assert_unchanged(c, before)


# --- keys --------------------------------------------------------------------------


def test_as_key_tuple_names_the_caller_and_the_item() -> None:
    assert as_key_tuple([key(1)], "f") == (key(1),)
    with pytest.raises(KeyTypeError, match="f takes a sequence of CacheKey, got str"):
        as_key_tuple("abc", "f")
    with pytest.raises(KeyTypeError, match="a single CacheKey"):
        as_key_tuple(key(1), "f")
    with pytest.raises(KeyTypeError, match=r"keys\[1\] must be a CacheKey, got int"):
        as_key_tuple([key(1), 2], "f")


# --- the error contract -------------------------------------------------------------

CONSTRUCTOR_ERRORS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"max_entries": "10"}, ArgumentTypeError, "max_entries must be an int"),
    ({"max_entries": True}, ArgumentTypeError, "max_entries must be an int"),
    ({"max_entries": 1.5}, ArgumentTypeError, "max_entries must be an int"),
    ({"max_entries": 0}, ArgumentValueError, "max_entries must be between"),
    ({"max_entries": np.int64(0)}, ArgumentValueError, "max_entries must be between"),
    ({"ttl_seconds": "5"}, ArgumentTypeError, "ttl_seconds must be a number"),
    ({"ttl_seconds": 0}, ArgumentValueError, "ttl_seconds must be a number > 0"),
    ({"ttl_seconds": math.nan}, ArgumentValueError, "ttl_seconds"),
    ({"max_memory_mb": None}, ArgumentTypeError, "max_memory_mb must be a number"),
    ({"max_memory_mb": -1}, ArgumentValueError, "max_memory_mb must be a number > 0"),
    ({"max_memory_mb": math.inf}, ArgumentValueError, "finite"),
    ({"dim": 0}, ArgumentValueError, "dim must be between"),
    ({"dim": 2.0}, ArgumentTypeError, "dim must be an int"),
    ({"dim": np.bool_(True)}, ArgumentTypeError, "dim must be an int"),
    ({"clock": 5}, ArgumentTypeError, "clock must be a callable"),
    ({"clock": lambda: "now", "ttl_seconds": 1}, ArgumentTypeError, "clock\\(\\) must return"),
    ({"clock": lambda: math.inf}, ArgumentValueError, "finite seconds"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), CONSTRUCTOR_ERRORS)
@pytest.mark.parametrize("cls", [SyncEmbeddingCache, EmbeddingCache])
def test_constructor_errors_are_embcache_errors(
    cls: type, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as e:
        cls(**kwargs)
    assert isinstance(e.value, EmbcacheError)
    assert isinstance(e.value, TypeError if issubclass(error, TypeError) else ValueError)


def test_numpy_integers_are_accepted_where_an_int_is() -> None:
    c = SyncEmbeddingCache(np.int32(10), np.float32(5.0), np.float64(1.0), dim=np.int64(4))
    assert (c.max_entries, c.dim) == (10, 4)
    c.put(key(1), vec(1))
    assert key(1) in c


def test_cache_key_field_errors() -> None:
    with pytest.raises(KeyTypeError, match="content_hash must be a str"):
        CacheKey(b"h", "m")  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError, match="model_version must be a non-empty str") as e:
        CacheKey("h", "")
    assert isinstance(e.value, ValueError) and isinstance(e.value, EmbcacheError)


def test_put_none_says_the_vector_is_missing() -> None:
    c = SyncEmbeddingCache(10, None, 1)
    with pytest.raises(VectorTypeError, match=r"vector is missing \(got None\)"):
        c.put(key(1), None)
    with pytest.raises(VectorTypeError, match=r"matrix is missing \(got None\)"):
        c.put_many([key(1)], None)
    assert len(c) == 0


def make_matrix() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix([[1.0, 2.0]])


@pytest.mark.parametrize(
    "make",
    [make_matrix, lambda: np.ma.masked_array([1.0, 2.0], mask=[0, 1])],
    ids=["matrix", "masked"],
)
def test_matrix_and_masked_arrays_get_a_clear_error(make: Any) -> None:
    data = make()
    c = SyncEmbeddingCache(10, None, 1)
    with pytest.raises(VectorTypeError, match=r"vector must be a 1-D array-like .*numpy"):
        c.put(key(1), data)
    with pytest.raises(VectorTypeError, match=r"matrix must be a 2-D array-like .*numpy"):
        c.put_many([key(1)], data)
    assert len(c) == 0


def test_out_errors_are_embcache_errors() -> None:
    c = SyncEmbeddingCache(10, None, 1, dim=4)
    for out, error in [
        ([[0.0] * 4], ArgumentTypeError),
        (np.zeros((1, 4), np.float64), ArgumentTypeError),
        (np.zeros((2, 4), np.float32), ArgumentValueError),
        (np.zeros((1, 5), np.float32), DimensionMismatchError),
    ]:
        with pytest.raises(error) as e:
            c.get_many([key(1)], out=out)  # type: ignore[arg-type]
        assert isinstance(e.value, EmbcacheError)
