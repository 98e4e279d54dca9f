"""Rejected input at every public entry point: the exception type, a message that
says what was wrong, and a cache left exactly as it was."""

from __future__ import annotations

import array
import asyncio
import datetime
import fractions
import math
import re
from typing import Any

import numpy as np
import pytest
from conftest import MIB, OVERHEAD, FakeClock, assert_unchanged, entry_bytes, key, snapshot, vec

from embcache import (
    CacheKey,
    DimensionMismatchError,
    EmbcacheError,
    EmbeddingCache,
    EntryTooLargeError,
    InvalidVectorError,
    KeyTypeError,
    SyncEmbeddingCache,
    VectorTypeError,
)

# --- CacheKey ---------------------------------------------------------------------------

WRONG_STR = [None, 1, 1.5, b"bytes", bytearray(b"x"), ["a"], ("a",), object(), True]


@pytest.mark.parametrize("bad", WRONG_STR, ids=repr)
@pytest.mark.parametrize("field", ["content_hash", "model_version"])
def test_key_required_field_wrong_type(field: str, bad: Any) -> None:
    args = {"content_hash": "h", "model_version": "m", field: bad}
    with pytest.raises(TypeError, match=f"CacheKey {field} must be a str.*{type(bad).__name__}"):
        CacheKey(**args)


@pytest.mark.parametrize("field", ["content_hash", "model_version"])
def test_key_required_field_empty(field: str) -> None:
    args = {"content_hash": "h", "model_version": "m", field: ""}
    with pytest.raises(ValueError, match=f"CacheKey {field} must be a non-empty str"):
        CacheKey(**args)


@pytest.mark.parametrize("bad", [1, 0, 1.5, b"c", ["c"], object(), False], ids=repr)
def test_key_chunk_id_wrong_type(bad: Any) -> None:
    with pytest.raises(TypeError, match=f"chunk_id must be a str or None.*{type(bad).__name__}"):
        CacheKey("h", "m", bad)


def test_key_missing_and_extra_arguments() -> None:
    with pytest.raises(TypeError, match=r"at least 2 positional arguments \(0 given\)"):
        CacheKey()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"at least 2 positional arguments \(1 given\)"):
        CacheKey("h")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"at most 3 positional arguments \(4 given\)"):
        CacheKey("h", "m", "c", "extra")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        CacheKey("h", "m", nope="x")  # type: ignore[call-arg]


def test_key_surrogates_rejected_cleanly() -> None:
    # a lone surrogate has no UTF-8 encoding: an InvalidKeyError naming the field
    # (once the built-in UnicodeEncodeError, which no EmbcacheError handler caught)
    from embcache import EmbcacheError, InvalidKeyError

    for args, field in [(("\ud800", "m"), "content_hash"), (("h", "\ud800"), "model_version"),
                        (("h", "m", "\udfff"), "chunk_id")]:
        with pytest.raises(InvalidKeyError, match=f"{field} .*lone surrogate") as e:
            CacheKey(*args)
        assert isinstance(e.value, EmbcacheError) and isinstance(e.value, ValueError)
    with pytest.raises(InvalidKeyError, match="text holds a lone surrogate"):
        CacheKey.from_text("x\ud800", "m")


@pytest.mark.parametrize("bad", [None, 1, b"text", bytearray(b"t"), ["t"], 1.0], ids=repr)
def test_from_text_text_wrong_type(bad: Any) -> None:
    with pytest.raises(TypeError, match=f"text must be a str.*{type(bad).__name__}"):
        CacheKey.from_text(bad, "m")


def test_from_text_bad_model_and_chunk() -> None:
    with pytest.raises(TypeError, match="model_version must be a str"):
        CacheKey.from_text("t", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model_version must be a non-empty str"):
        CacheKey.from_text("t", "")
    with pytest.raises(TypeError, match="chunk_id must be a str or None"):
        CacheKey.from_text("t", "m", 3)  # type: ignore[arg-type]


# --- constructors -------------------------------------------------------------------------

CONSTRUCTORS = [SyncEmbeddingCache, EmbeddingCache]

def bad(id_: str, exc: type, message: str, **kwargs: Any) -> Any:
    """One rejected constructor call: its kwargs, the exception and a message regex."""
    return pytest.param(kwargs, exc, message, id=id_)


BAD_CONSTRUCTOR_ARGS = [
    bad("max_entries-float", TypeError, "max_entries must be an int, got float", max_entries=1.0),
    bad("max_entries-str", TypeError, "max_entries must be an int, got str", max_entries="10"),
    bad("max_entries-bool", TypeError, "max_entries must be an int, got bool", max_entries=True),
    bad("max_entries-None", TypeError, "max_entries must be an int, got NoneType",
        max_entries=None),
    bad("max_entries-0", ValueError, "max_entries must be between 1 and .*got 0", max_entries=0),
    bad("max_entries-negative", ValueError, "max_entries must be between 1 and .*got -5",
        max_entries=-5),
    bad("max_entries-2**63", ValueError, "max_entries must be between", max_entries=2**63),
    bad("ttl-str", TypeError, "ttl_seconds must be a number, got str", ttl_seconds="60"),
    bad("ttl-bool", TypeError, "ttl_seconds must be a number, got bool", ttl_seconds=True),
    bad("ttl-complex", TypeError, "ttl_seconds must be a number, got complex", ttl_seconds=1 + 2j),
    bad("ttl-timedelta", TypeError, "ttl_seconds must be a number",
        ttl_seconds=datetime.timedelta(seconds=5)),
    bad("ttl-0", ValueError, "ttl_seconds must be a number > 0, got 0", ttl_seconds=0),
    bad("ttl-0.0", ValueError, "ttl_seconds must be a number > 0", ttl_seconds=0.0),
    bad("ttl-negative", ValueError, "ttl_seconds must be a number > 0, got -1.0", ttl_seconds=-1.0),
    bad("ttl-minus-inf", ValueError, "ttl_seconds must be a number > 0", ttl_seconds=-math.inf),
    bad("ttl-nan", ValueError, "ttl_seconds must be a number > 0, got nan", ttl_seconds=math.nan),
    bad("ttl-np-nan", ValueError, "ttl_seconds must be a number > 0",
        ttl_seconds=np.float64("nan")),
    bad("mb-str", TypeError, "max_memory_mb must be a number, got str", max_memory_mb="512"),
    bad("mb-None", TypeError, "max_memory_mb must be a number, got NoneType", max_memory_mb=None),
    bad("mb-bool", TypeError, "max_memory_mb must be a number, got bool", max_memory_mb=False),
    bad("mb-0", ValueError, "max_memory_mb must be a number > 0, got 0", max_memory_mb=0),
    bad("mb-negative", ValueError, "max_memory_mb must be a number > 0", max_memory_mb=-1.0),
    bad("mb-nan", ValueError, "max_memory_mb must be a number > 0, got nan",
        max_memory_mb=math.nan),
    bad("mb-inf", ValueError, "max_memory_mb must be finite", max_memory_mb=math.inf),
    bad("mb-2**50", ValueError, "max_memory_mb must be finite and below", max_memory_mb=2.0**50),
    bad("mb-10**400", ValueError, "max_memory_mb", max_memory_mb=10**400),
    bad("dim-float", TypeError, "dim must be an int, got float", dim=1.0),
    bad("dim-str", TypeError, "dim must be an int, got str", dim="768"),
    bad("dim-bool", TypeError, "dim must be an int, got bool", dim=True),
    bad("dim-0", ValueError, "dim must be between 1 and .*got 0", dim=0),
    bad("dim-negative", ValueError, "dim must be between 1 and .*got -768", dim=-768),
    bad("clock-int", TypeError, "clock must be a callable.*got int", clock=5),
    bad("clock-str", TypeError, "clock must be a callable.*got str", clock="time.monotonic"),
    bad("clock-returns-None", TypeError, r"clock\(\) must return a number.*NoneType",
        clock=lambda: None),
    bad("clock-returns-list", TypeError, r"clock\(\) must return a number.*list",
        clock=lambda: [1.0]),
    bad("clock-returns-str", TypeError, r"clock\(\) must return a number.*str",
        clock=lambda: "12.5"),
    bad("clock-returns-bool", TypeError, r"clock\(\) must return a number.*bool",
        clock=lambda: True),
    bad("clock-returns-nan", ValueError, r"clock\(\) returned nan.*finite", clock=lambda: math.nan),
    bad("clock-returns-inf", ValueError, r"clock\(\) returned inf.*finite", clock=lambda: math.inf),
    bad("clock-returns-10**400", ValueError, r"clock\(\).*finite", clock=lambda: 10**400),
    bad("clock-needs-arg", TypeError, "positional argument", clock=lambda x: 1.0),
    bad("dim-over-budget", EntryTooLargeError,
        "max_memory_mb=0.001 cannot hold even one vector of dim 1000",
        dim=1000, max_memory_mb=0.001),
    bad("dim-one-byte-over-budget", EntryTooLargeError, "cannot hold even one vector of dim 10",
        dim=10, max_memory_mb=(entry_bytes(10) - 1) / MIB),
]


@pytest.mark.parametrize("ctor", CONSTRUCTORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("kwargs", "exc", "message"), BAD_CONSTRUCTOR_ARGS)
def test_constructor_rejects(ctor: Any, kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc, match=message):
        ctor(**kwargs)


def test_entry_too_large_is_a_value_error() -> None:
    assert issubclass(EntryTooLargeError, ValueError)
    assert issubclass(DimensionMismatchError, ValueError)
    assert issubclass(InvalidVectorError, ValueError)
    assert issubclass(VectorTypeError, TypeError)
    assert issubclass(KeyTypeError, TypeError)
    for cls in (EntryTooLargeError, DimensionMismatchError, InvalidVectorError,
                VectorTypeError, KeyTypeError):
        assert issubclass(cls, EmbcacheError)


def test_dim_exactly_fitting_the_budget_is_accepted() -> None:
    c = SyncEmbeddingCache(5, max_memory_mb=entry_bytes(10) / MIB, dim=10)
    c.put(key(1), vec(1, 10))
    assert len(c) == 1


@pytest.mark.parametrize("ctor", CONSTRUCTORS, ids=lambda c: c.__name__)
def test_constructor_accepts_edge_values(ctor: Any) -> None:
    ctor(1, math.inf, 1e-3)
    ctor(max_entries=2**31 - 2, max_memory_mb=1)
    ctor(ttl_seconds=1e-300)
    ctor(ttl_seconds=fractions.Fraction(1, 3), max_memory_mb=fractions.Fraction(1, 2))
    ctor(ttl_seconds=np.float32(2.5), max_memory_mb=np.float64(1.0))
    ctor(ttl_seconds=7, max_memory_mb=1, dim=1)
    ctor(clock=lambda: np.float64(3.0))
    ctor(clock=lambda: 12)


def test_huge_ttl_is_accepted_or_rejected_cleanly() -> None:
    # an int ttl too large for a float is still a number > 0: either it means
    # "effectively never" or it is refused with a ValueError naming ttl_seconds;
    # never an OverflowError escaping from float conversion
    clock = FakeClock()
    try:
        c = SyncEmbeddingCache(4, 10**400, clock=clock)
    except ValueError as exc:
        assert "ttl_seconds" in str(exc)
        return
    c.put(key(1), [1.0])
    clock.advance(1e300)
    assert c.get(key(1)) is not None


def test_dim_is_keyword_only() -> None:
    with pytest.raises(TypeError, match=r"at most 3 positional arguments \(4 given\)"):
        SyncEmbeddingCache(10, None, 1.0, 4)  # type: ignore[misc]


# --- put -------------------------------------------------------------------------------------

BAD_KEYS = [None, "hash", ("h", "m", "c"), ["h", "m"], 1, b"h", object()]


@pytest.fixture
def busy() -> tuple[SyncEmbeddingCache, list[CacheKey], FakeClock]:
    """A full-ish cache of dim 4 with TTL and stats in every counter."""
    clock = FakeClock()
    c = SyncEmbeddingCache(6, 100.0, 1.0, dim=4, clock=clock)
    keys = [key(i) for i in range(8)]
    for i, k in enumerate(keys):
        c.put(k, vec(i))          # 0 and 1 evicted
    c.put(keys[5], vec(55))       # overwrite
    c.get(keys[3])
    c.get(key("missing"))
    c.remove(keys[4])
    return c, keys, clock


@pytest.fixture
def anydim() -> tuple[SyncEmbeddingCache, list[CacheKey]]:
    c = SyncEmbeddingCache(10, None, 0.01)
    keys = [key(i) for i in range(4)]
    for i, k in enumerate(keys):
        c.put(k, vec(i, 1 + 7 * i))
    return c, keys


@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
def test_put_rejects_non_cachekey(busy, bad: Any) -> None:  # type: ignore[no-untyped-def]
    c, keys, _ = busy
    before = snapshot(c, keys)
    with pytest.raises(KeyTypeError, match=f"key must be a CacheKey, got {type(bad).__name__}"):
        c.put(bad, vec(1))
    assert_unchanged(c, before)


BAD_VECTOR_TYPES = [
    ("abcd", "got str"),
    (b"abcd", "got bytes"),
    (bytearray(b"abcd"), "got bytearray"),
    ([True, False, True, False], "dtype bool"),
    (np.ones(4, dtype=bool), "dtype bool"),
    (np.ones(4, dtype=np.complex64), "dtype complex64"),
    (np.array([1 + 2j, 3, 4, 5]), "dtype complex128"),
    (np.array(["a", "b", "c", "d"]), "dtype <U1"),
    ([1, "a", 2, 3], "dtype <U"),
    (np.array([1.0, 2.0, 3.0, 4.0], dtype=object), "dtype object"),
    ([object()] * 4, "dtype object"),
    (None, "is missing \\(got None\\)"),
    ({"a": 1}, "dtype object"),
    (np.array(["2020-01-01"] * 4, dtype="datetime64[D]"), "dtype datetime64"),
    (np.arange(4).astype("timedelta64[s]"), "dtype timedelta64"),
    (np.zeros(4, dtype=[("x", "f4")]), "dtype"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_VECTOR_TYPES,
                         ids=[m for _, m in BAD_VECTOR_TYPES])
def test_put_rejects_non_numeric_vectors(busy, bad: Any, message: str) -> None:  # type: ignore[no-untyped-def]
    c, keys, _ = busy
    before = snapshot(c, keys)
    for k in (keys[3], key("new")):           # existing key and new key
        with pytest.raises(VectorTypeError, match=f"vector .*{message}"):
            c.put(k, bad)
    assert_unchanged(c, before)


BAD_VECTOR_VALUES = [
    (np.ones((2, 2), np.float32), "vector must be 1-D, got shape \\(2, 2\\)"),
    (np.ones((4, 1)), "vector must be 1-D, got shape \\(4, 1\\)"),
    (np.ones((1, 4)), "1-D"),
    (np.zeros((1, 0)), "1-D"),
    (np.float32(1.0), "vector must be 1-D, got shape \\(\\)"),
    (5, "1-D"),
    (2.5, "1-D"),
    ([[1.0, 2.0], [3.0, 4.0]], "1-D"),
    ([[1], [1, 2]], "could not be read as a 1-D array"),
    ([], "vector is empty"),
    ((), "vector is empty"),
    (np.zeros(0, np.float32), "vector is empty"),
    (np.arange(10.0)[5:5], "vector is empty"),
    ([1.0, math.nan, 2.0, 3.0], r"vector\[1\] is nan.*finite"),
    (np.array([math.nan, 1, 1, 1], np.float32), r"vector\[0\] is nan"),
    ([1.0, 2.0, 3.0, math.inf], r"vector\[3\] is inf.*finite"),
    (np.array([1.0, -np.inf, 0, 0], np.float32), r"vector\[1\] is -inf"),
    (np.array([1.0, 2.0, np.inf, 0], np.float16), r"vector\[2\] is inf"),
    (np.array([0, 0, 0, 1e39]), r"vector\[3\] = .*1e\+39.* overflows float32"),
    (np.array([-3.5e38, 0, 0, 0]), r"vector\[0\] = .*-3.5e\+38.* overflows float32"),
    (np.array([1.0, 2.0, math.nan, 4.0])[::-1], r"vector\[1\] is nan"),
    (np.array([1.0, 2.0, math.nan, 4.0], np.float32)[::-1], r"vector\[1\] is nan"),
    (np.arange(8.0)[::2] * np.array([1, 1, np.inf, 1]), r"vector\[2\] is inf"),
    (np.array([1.0, math.nan, 1.0, 1.0], ">f4"), r"vector\[1\] is nan"),
    (np.array([1.0, 1.0, math.inf, 1.0], ">f8"), r"vector\[2\] is inf"),
    (np.array([1.0, 1.0, 1.0, 1e300], ">f8"), r"vector\[3\].*overflows float32"),
    (array.array("d", [1.0, 2.0, math.nan, 4.0]), r"vector\[2\] is nan"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_VECTOR_VALUES,
                         ids=[f"{i}-{re.sub(r'[^a-z0-9 -]', '', m[:24])}"
                              for i, (_, m) in enumerate(BAD_VECTOR_VALUES)])
def test_put_rejects_invalid_vectors(busy, bad: Any, message: str) -> None:  # type: ignore[no-untyped-def]
    c, keys, _ = busy
    before = snapshot(c, keys)
    for k in (keys[3], key("new")):
        with pytest.raises(InvalidVectorError, match=message):
            c.put(k, bad)
    assert_unchanged(c, before)


def test_put_rejects_longdouble_overflow(busy) -> None:  # type: ignore[no-untyped-def]
    c, keys, _ = busy
    big = np.array([1, 1, 1, 1], dtype=np.longdouble)
    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("longdouble is float64 on this platform")
    big[2] = np.longdouble(np.finfo(np.float64).max) * 16
    before = snapshot(c, keys)
    with pytest.raises(InvalidVectorError, match=r"vector\[2\]"):
        c.put(keys[3], big)
    assert_unchanged(c, before)


@pytest.mark.parametrize("dim", [1, 3, 5, 768])
def test_put_rejects_other_dim_when_fixed(busy, dim: int) -> None:  # type: ignore[no-untyped-def]
    c, keys, _ = busy
    before = snapshot(c, keys)
    for k in (keys[3], key("new")):
        with pytest.raises(DimensionMismatchError,
                           match=f"vector has dim {dim}, but this cache stores dim 4"):
            c.put(k, np.ones(dim, np.float32))
    assert_unchanged(c, before)


def test_put_rejects_entry_larger_than_budget(anydim) -> None:  # type: ignore[no-untyped-def]
    c, keys = anydim
    budget = c.get_cache_info().memory_budget_bytes
    dim = (budget - c.get_cache_info().entry_overhead_bytes) // 4 + 1
    before = snapshot(c, keys)
    for k in (keys[1], key("new")):
        with pytest.raises(EntryTooLargeError,
                           match=f"dim {dim} needs {dim * 4 + OVERHEAD} bytes.*budget of {budget}"):
            c.put(k, np.ones(dim, np.float32))
    assert_unchanged(c, before)
    # one float less fits exactly, evicting everything else
    c.put(keys[0], np.ones(dim - 1, np.float32))
    info = c.get_cache_info()
    assert info.size == 1
    assert info.memory_usage_bytes == (dim - 1) * 4 + OVERHEAD
    assert budget - 4 < info.memory_usage_bytes <= budget
    c._check_invariants()


@pytest.mark.parametrize(("bad", "exc"), [
    ("abcd", VectorTypeError), (np.ones((2, 2)), InvalidVectorError),
    ([1.0, math.nan], InvalidVectorError), ([], InvalidVectorError),
    (np.ones(10**5, np.float32), EntryTooLargeError),
])
def test_put_errors_on_mixed_dim_cache(anydim, bad: Any, exc: type) -> None:  # type: ignore[no-untyped-def]
    c, keys = anydim
    before = snapshot(c, keys)
    for k in (*keys, key("new")):
        with pytest.raises(exc):
            c.put(k, bad)
    assert_unchanged(c, before)


@pytest.mark.parametrize("bad", [[1.0, math.nan, 0, 0], "xxxx", np.ones(3), np.ones((2, 2))],
                         ids=["nan", "str", "dim", "2d"])
def test_failed_put_keeps_recency_and_ttl(bad: Any) -> None:
    clock = FakeClock()
    c = SyncEmbeddingCache(3, 10.0, dim=4, clock=clock)
    for i in range(3):
        c.put(key(i), vec(i))
    clock.advance(5.0)
    with pytest.raises((TypeError, ValueError)):
        c.put(key(0), bad)                 # 0 stays the LRU entry with its old TTL
    c.put(key(3), vec(3))
    assert key(0) not in c and key(1) in c
    clock.advance(5.0)                     # 1, 2 written at t0 expire; 3 (t0+5) lives
    assert key(1) not in c and key(3) in c
    c._check_invariants()


# --- get / remove / in -------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
def test_get_remove_contains_reject_non_cachekey(busy, bad: Any) -> None:  # type: ignore[no-untyped-def]
    c, keys, _ = busy
    before = snapshot(c, keys)
    message = f"key must be a CacheKey, got {type(bad).__name__}"
    with pytest.raises(KeyTypeError, match=message):
        c.get(bad)
    with pytest.raises(KeyTypeError, match=message):
        c.remove(bad)
    with pytest.raises(KeyTypeError, match=message):
        bad in c  # noqa: B015
    assert_unchanged(c, before)


def test_methods_reject_missing_arguments(busy) -> None:  # type: ignore[no-untyped-def]
    c, keys, _ = busy
    before = snapshot(c, keys)
    with pytest.raises(TypeError, match=r"put\(\) takes exactly 2 positional arguments"):
        c.put(keys[3])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"get\(\) takes exactly 1 positional argument"):
        c.get()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"remove\(\) takes exactly 1 positional argument"):
        c.remove()  # type: ignore[call-arg]
    assert_unchanged(c, before)


# --- a clock that fails later ---------------------------------------------------------------


class BreakingClock(FakeClock):
    """A fake clock that can be told to raise or to return garbage."""

    def __init__(self) -> None:
        super().__init__()
        self.result: Any = None

    def __call__(self) -> Any:
        if isinstance(self.result, BaseException):
            raise self.result
        if self.result is not None:
            return self.result
        return super().__call__()


@pytest.mark.parametrize(("result", "exc", "message"), [
    (RuntimeError("clock broke"), RuntimeError, "clock broke"),
    (math.nan, ValueError, r"clock\(\) returned nan"),
    (-math.inf, ValueError, r"clock\(\) returned -inf"),
    ("soon", TypeError, r"clock\(\) must return a number.*str"),
    (None, None, None),
])
def test_clock_failing_at_operation_time(result: Any, exc: Any, message: Any) -> None:
    clock = BreakingClock()
    c = SyncEmbeddingCache(4, 10.0, dim=2, clock=clock)
    keys = [key(i) for i in range(4)]
    for i in range(3):
        c.put(keys[i], vec(i, 2))
    if exc is None:
        return
    before = snapshot(c, keys)
    clock.result = result
    for op in (lambda: c.put(keys[0], vec(9, 2)), lambda: c.put(keys[3], vec(9, 2)),
               lambda: c.get(keys[1]), lambda: c.remove(keys[2]), lambda: len(c),
               lambda: keys[1] in c, c.get_cache_info):
        with pytest.raises(exc, match=message):
            op()
    clock.result = None
    assert_unchanged(c, before)


# --- the asyncio facade ---------------------------------------------------------------------


def test_async_facade_rejects_like_the_core() -> None:
    async def main() -> None:
        c = EmbeddingCache(4, None, 1.0, dim=4)
        keys = [key(i) for i in range(3)]
        for i, k in enumerate(keys):
            await c.put(k, vec(i))
        before = snapshot(c, keys)
        with pytest.raises(KeyTypeError, match="key must be a CacheKey, got str"):
            await c.put("k", vec(1))  # type: ignore[arg-type]
        with pytest.raises(KeyTypeError, match="key must be a CacheKey, got tuple"):
            await c.get(("h", "m"))  # type: ignore[arg-type]
        with pytest.raises(KeyTypeError, match="key must be a CacheKey, got NoneType"):
            await c.remove(None)  # type: ignore[arg-type]
        with pytest.raises(KeyTypeError, match="key must be a CacheKey, got int"):
            1 in c  # noqa: B015
        with pytest.raises(VectorTypeError, match="dtype bool"):
            await c.put(keys[0], [True] * 4)
        with pytest.raises(InvalidVectorError, match="is nan"):
            await c.put(keys[0], [1.0, 2.0, math.nan, 3.0])
        with pytest.raises(InvalidVectorError, match="vector is empty"):
            await c.put(keys[0], [])
        with pytest.raises(InvalidVectorError, match="1-D"):
            await c.put(keys[0], np.ones((2, 2)))
        with pytest.raises(DimensionMismatchError, match="dim 5"):
            await c.put(keys[0], np.ones(5))
        assert_unchanged(c, before)
        small = EmbeddingCache(4, None, 0.0001)
        with pytest.raises(EntryTooLargeError, match="budget"):
            await small.put(keys[0], np.ones(100))
        assert len(small) == 0

    asyncio.run(main())


@pytest.mark.parametrize("bound", ["entries", "memory"])
@pytest.mark.parametrize(
    "bad",
    [
        np.array([1.0, np.nan, 3.0, 4.0], dtype=np.float32),
        np.array([1.0, 2.0, 3.0, 1e39], dtype=np.float64),
        np.array([np.inf, 2.0, 3.0, 4.0], dtype=np.float32)[::-1],
    ],
    ids=["nan-f32", "overflow-f64", "inf-strided"],
)
@pytest.mark.parametrize("overwrite", [False, True], ids=["new-key", "overwrite"])
def test_rejected_put_into_a_full_cache_evicts_nothing(
    bound: str, bad: np.ndarray, overwrite: bool
) -> None:
    """put checks values while copying them into a free row, before any entry is
    replaced or evicted: a rejected put into a full cache keeps every entry, its
    recency and the old vector of the key it tried to overwrite."""
    if bound == "entries":
        cache = SyncEmbeddingCache(3, None, 1, dim=4)
    else:
        cache = SyncEmbeddingCache(100, None, 3 * entry_bytes(4) / MIB, dim=4)
    keys = [key(i) for i in range(3)]
    for i, k in enumerate(keys):
        cache.put(k, vec(i))
    assert len(cache) == 3
    before = snapshot(cache, [*keys, key("new")])
    with pytest.raises(InvalidVectorError):
        cache.put(keys[0] if overwrite else key("new"), bad)
    assert_unchanged(cache, before)
    cache.put(key("next"), vec(9))  # recency unchanged: the oldest entry goes
    assert keys[0] not in cache and keys[1] in cache and keys[2] in cache


@pytest.mark.parametrize("n", [1, 7, 31, 32, 33, 63, 64, 65, 100, 768, 769])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_put_finds_a_non_finite_float32_value_at_every_position(n: int, bad: float) -> None:
    # the contiguous float32 check works on blocks of 32 values and a tail:
    # one bad value anywhere, in either, is found and named
    c = SyncEmbeddingCache(8, None, 1.0)
    good = np.linspace(-3.4e38, 3.4e38, n, dtype=np.float32)
    c.put(key("good"), good)
    for i in range(n):
        v = good.copy()
        v[i] = bad
        with pytest.raises(InvalidVectorError, match=rf"vector\[{i}\] is "):
            c.put(key("bad"), v)
    assert key("bad") not in c and len(c) == 1
