"""Tensors and foreign dtypes at the boundary, through every way a vector comes in.

Every entry point (put, put_many, put_batch, the asyncio facade's put / put_many
with a tier, get_or_compute's returned values sync and async, CachedEmbedder's
model answers) reads values the same way:

* a torch tensor that requires grad is read through ``detach()`` (the same
  memory: the caller's autograd graph is neither copied nor changed);
* a float dtype numpy has no type for (torch's bfloat16 and float8 types) is
  converted to float32, which holds each of its values exactly; so are
  ml_dtypes' bfloat16 / float8 arrays (numpy casts them to float64 without loss);
* anything else that cannot be read raises an EmbcacheError that is also the
  built-in (VectorTypeError / TypeError, or InvalidVectorError / ValueError for a
  ValueError such as ragged rows), with our message: it starts with what the
  data is, and for a tensor names ``detach()`` / ``cpu()`` / ``float()``;
  whatever the object's ``__array__`` raised is never what the caller sees, except
  a BaseException that is not an Exception (KeyboardInterrupt), which passes;
* a rejected call leaves the cache (and the tier) exactly as it was.

The torch and ml_dtypes cases skip when those packages are not installed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import warnings
from typing import Any, Callable

import numpy as np
import pytest
from conftest import assert_unchanged, run, snapshot
from dict_tier import DictTier

from embcache import (
    CachedEmbedder,
    CacheKey,
    EmbcacheError,
    EmbeddingCache,
    InvalidVectorError,
    VectorTypeError,
)

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None
try:
    import ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    ml_dtypes = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
needs_ml_dtypes = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed")

TEXT = "a text"
KEY = CacheKey.from_text(TEXT, "m")
OLD = CacheKey.from_text("already there", "m")
VALUES = [1.5, -2.25, 0.0078125, 256.0]
"""Exact in bfloat16, float8_e4m3fn... and float32."""


def new_cache() -> EmbeddingCache:
    cache = EmbeddingCache(100, tier=DictTier())
    cache.sync.put(OLD, np.ones(len(VALUES), dtype=np.float32))
    return cache


def tier_of(cache: EmbeddingCache) -> DictTier:
    tier = cache.tier
    assert isinstance(tier, DictTier)
    return tier


def as_row(value: Any) -> Any:
    """`value` (one vector) as a one-row matrix of the same kind."""
    if torch is not None and isinstance(value, torch.Tensor):
        if value.layout != torch.strided:  # sparse: no reshape
            return value.to_dense().reshape(1, -1).to_sparse()
        return value.reshape(1, -1)
    if isinstance(value, np.ndarray):
        return value.reshape(1, -1)
    return [value]


def rows_list(value: Any) -> Any:
    """`value` as a list holding it (a list of tensors, for a matrix)."""
    return [value]


async def async_answer(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


# Each sink stores `value` (one vector) under KEY its own way; `matrix` turns the
# vector into the one-row matrix a batch entry point takes.
Sink = Callable[[EmbeddingCache, Any, Callable[[Any], Any]], None]


def put(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    cache.sync.put(KEY, value)


def put_many(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    cache.sync.put_many([KEY], matrix(value))


def put_batch(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    batch = cache.sync.put_batch([KEY], matrix(value))
    batch.take()
    batch.store()


def facade_put(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    run(cache.put(KEY, value))


def facade_put_many(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    run(cache.put_many([KEY], matrix(value)))


def get_or_compute(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    cache.sync.get_or_compute([KEY], lambda missing: matrix(value))


def facade_get_or_compute(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    async def compute(missing: list[CacheKey]) -> Any:
        return await async_answer(matrix(value))

    run(cache.get_or_compute([KEY], compute))


def embed_sync(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    CachedEmbedder(lambda texts: matrix(value), "m", cache=cache.sync).embed_sync([TEXT])


def embed_one_sync(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    CachedEmbedder(lambda texts: matrix(value), "m", cache=cache).embed_one_sync(TEXT)


def embed_async_model(cache: EmbeddingCache, value: Any, matrix: Callable[[Any], Any]) -> None:
    async def model(texts: list[str]) -> Any:
        return await async_answer(matrix(value))

    run(CachedEmbedder(model, "m", cache=cache).embed([TEXT, TEXT]))


SINKS: dict[str, tuple[Sink, str]] = {
    # name: (sink, how its error messages start)
    "put": (put, "vector"),
    "put_many": (put_many, "matrix"),
    "put_batch": (put_batch, "matrix"),
    "EmbeddingCache.put (tier)": (facade_put, "vector"),
    "EmbeddingCache.put_many (tier)": (facade_put_many, "matrix"),
    "get_or_compute": (get_or_compute, "compute(missing)"),
    "EmbeddingCache.get_or_compute": (facade_get_or_compute, "compute(missing)"),
    "embed_sync": (embed_sync, "embed_fn(misses[0:1])"),
    "embed_one_sync": (embed_one_sync, "embed_fn(misses[0:1])"),
    "embed (async model)": (embed_async_model, "embed_fn(misses[0:1])"),
}
SINK_NAMES = list(SINKS)
LOOKS_UP = {
    "get_or_compute",
    "EmbeddingCache.get_or_compute",
    "embed_sync",
    "embed_one_sync",
    "embed (async model)",
}
"""Sinks that look KEY up before computing it: that miss is counted."""


def assert_untouched(cache: EmbeddingCache, before: Any, sink: str) -> None:
    """The cache as it was, but for the misses counted by `sink`'s own lookup."""
    if sink in LOOKS_UP:
        misses = cache.sync.get_cache_info().misses - before.info["misses"]
        assert misses >= 1
        info = dict(before.info, misses=before.info["misses"] + misses)
        lookups = info["hits"] + info["misses"]
        info["hit_rate"] = info["hits"] / lookups
        before = dataclasses.replace(before, info=info)
    assert_unchanged(cache, before)


def stored(cache: EmbeddingCache) -> np.ndarray:
    row = cache.sync.get(KEY)
    assert row is not None
    return row


# -- accepted -------------------------------------------------------------------------


def torch_values() -> dict[str, Callable[[], Any]]:
    assert torch is not None

    def leaf(dtype: Any = None) -> Any:
        return torch.tensor(VALUES, dtype=dtype or torch.float32, requires_grad=True)

    return {
        "requires_grad": lambda: leaf(),
        "requires_grad float64": lambda: leaf(torch.float64),
        "requires_grad float16": lambda: leaf(torch.float16),
        "bfloat16": lambda: torch.tensor(VALUES, dtype=torch.bfloat16),
        "bfloat16 requires_grad": lambda: leaf(torch.bfloat16),
        "float8_e4m3fn": lambda: torch.tensor(VALUES).to(torch.float8_e4m3fn),
        "non-contiguous requires_grad": lambda: torch.tensor(
            [[v, 0.0] for v in VALUES], requires_grad=True
        )[:, 0],
        # a lazily negated view (its negative bit set): numpy refuses it as is
        "negated view": lambda: torch._neg_view(torch.tensor([-v for v in VALUES])),
    }


@needs_torch
@pytest.mark.parametrize("sink", SINK_NAMES)
@pytest.mark.parametrize(
    "kind",
    [
        "requires_grad",
        "requires_grad float64",
        "requires_grad float16",
        "bfloat16",
        "bfloat16 requires_grad",
        "float8_e4m3fn",
        "non-contiguous requires_grad",
        "negated view",
    ],
)
def test_a_tensor_numpy_cannot_take_as_is_is_read_exactly(sink: str, kind: str) -> None:
    cache = new_cache()
    value = torch_values()[kind]()
    SINKS[sink][0](cache, value, as_row)
    expected = np.array(VALUES, dtype=np.float32)
    np.testing.assert_array_equal(stored(cache), expected)
    if sink.startswith("EmbeddingCache.put"):  # the tier got the same row
        assert tier_of(cache).stored[KEY] == expected.tobytes()


@needs_torch
@pytest.mark.parametrize(
    "sink",
    [s for s in SINK_NAMES if SINKS[s][1] != "vector"],  # the batch entry points
)
def test_a_list_of_tensors_that_require_grad_is_a_matrix(sink: str) -> None:
    cache = new_cache()
    value = torch.tensor(VALUES, dtype=torch.bfloat16, requires_grad=True)
    SINKS[sink][0](cache, value, rows_list)
    np.testing.assert_array_equal(stored(cache), np.array(VALUES, dtype=np.float32))


@needs_torch
def test_reading_a_tensor_neither_copies_nor_changes_the_callers_graph() -> None:
    cache = new_cache()
    x = torch.tensor(VALUES, requires_grad=True)
    y = x * 3  # a non-leaf: part of the caller's graph
    version, grad_fn = y._version, y.grad_fn
    cache.sync.put(KEY, y)
    cache.sync.put_many([KEY], y.reshape(1, -1))
    assert y.requires_grad and y.grad_fn is grad_fn and y._version == version
    assert x.grad is None
    y.sum().backward()  # the graph still works, unchanged
    np.testing.assert_array_equal(x.grad.numpy(), np.full(len(VALUES), 3.0))
    np.testing.assert_array_equal(stored(cache), np.array(VALUES, dtype=np.float32) * 3)


@needs_ml_dtypes
@pytest.mark.parametrize("sink", SINK_NAMES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_ml_dtypes_arrays_are_read_exactly(sink: str, dtype: str) -> None:
    cache = new_cache()
    value = np.array(VALUES, dtype=getattr(ml_dtypes, dtype))  # rounded to the dtype
    SINKS[sink][0](cache, value, as_row)
    np.testing.assert_array_equal(stored(cache), value.astype(np.float32))


@needs_ml_dtypes
def test_a_nan_in_a_bfloat16_array_is_rejected_as_any_nan() -> None:
    cache = new_cache()
    before = snapshot(cache, [KEY, OLD])
    value = np.array([1.0, float("nan")], dtype=ml_dtypes.bfloat16)
    with pytest.raises(InvalidVectorError, match=r"^vector\[1\] is nan"):
        cache.sync.put(KEY, value)
    assert_unchanged(cache, before)


# -- rejected -------------------------------------------------------------------------


class ArrayRaises:
    """A numpy-like object whose __array__ raises `error`."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise self.error

    def __len__(self) -> int:
        return len(VALUES)


class ArrayOfObjects:
    """A numpy-like object whose __array__ answers with an object array."""

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.array([object() for _ in VALUES], dtype=object)


REJECTED: dict[str, tuple[Callable[[], Any], type[Exception], type[Exception], str]] = {
    # name: (value, our class, the built-in, what the message says after the prefix)
    "__array__ raises RuntimeError": (
        lambda: ArrayRaises(RuntimeError("device lost")),
        VectorTypeError,
        TypeError,
        r"could not be read as a \d-D array of real numbers \(RuntimeError: device lost\)",
    ),
    "__array__ raises TypeError": (
        lambda: ArrayRaises(TypeError("no")),
        VectorTypeError,
        TypeError,
        r"could not be read .*\(TypeError: no\)",
    ),
    "__array__ raises KeyError": (
        lambda: ArrayRaises(KeyError("k")),
        VectorTypeError,
        TypeError,
        r"could not be read .*\(KeyError: 'k'\)",
    ),
    "__array__ raises ValueError": (
        lambda: ArrayRaises(ValueError("bad values")),
        InvalidVectorError,
        ValueError,
        r"could not be read as a \d-D array of real numbers: bad values",
    ),
    "__array__ returns objects": (
        lambda: ArrayOfObjects(),
        VectorTypeError,
        TypeError,
        r"must hold real numbers \(integer or float dtype\), got dtype object",
    ),
}

TORCH_HINT = (
    r"pass a dense CPU tensor of a real dtype, e\.g\. tensor\.detach\(\)\.cpu\(\)\.float\(\)"
)


def torch_rejected() -> dict[str, tuple[Callable[[], Any], type[Exception], type[Exception], str]]:
    assert torch is not None

    def complex32() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "ComplexHalf support is experimental"
            return torch.ones(len(VALUES), dtype=torch.complex32)

    return {
        "meta device": (
            lambda: torch.ones(len(VALUES), device="meta", requires_grad=True),
            VectorTypeError,
            TypeError,
            r"could not be read .*meta.*; " + TORCH_HINT,
        ),
        "sparse": (
            lambda: torch.tensor(VALUES).to_sparse(),
            VectorTypeError,
            TypeError,
            r"could not be read .*Sparse.*; " + TORCH_HINT + r" \(a sparse one: \.to_dense\(\)",
        ),
        "complex32": (
            complex32,
            VectorTypeError,
            TypeError,
            r"could not be read .*ComplexHalf.*; " + TORCH_HINT,
        ),
        "complex64 requires_grad": (
            lambda: torch.ones(len(VALUES), dtype=torch.complex64, requires_grad=True),
            VectorTypeError,
            TypeError,
            r"must hold real numbers \(integer or float dtype\), got dtype complex64",
        ),
        "bool": (
            lambda: torch.ones(len(VALUES), dtype=torch.bool),
            VectorTypeError,
            TypeError,
            r"must hold real numbers \(integer or float dtype\), got dtype bool",
        ),
    }


def check_rejected(
    sink: str,
    make: Callable[[], Any],
    ours: type[Exception],
    builtin: type[Exception],
    message: str,
    matrix: Callable[[Any], Any],
) -> None:
    cache = new_cache()
    tier_before = dict(tier_of(cache).stored)
    before = snapshot(cache, [KEY, OLD])
    fn, prefix = SINKS[sink]
    with pytest.raises(ours) as info:
        fn(cache, make(), matrix)
    error = info.value
    assert isinstance(error, EmbcacheError) and isinstance(error, builtin)
    text = str(error)
    assert text.startswith(prefix + " "), text
    assert re.search(message, text), text
    assert_untouched(cache, before, sink)
    assert tier_of(cache).stored == tier_before


@pytest.mark.parametrize("sink", SINK_NAMES)
@pytest.mark.parametrize("kind", list(REJECTED))
def test_an_unreadable_array_like_raises_our_error_and_changes_nothing(
    sink: str, kind: str
) -> None:
    value, ours, builtin, words = REJECTED[kind]
    if kind == "__array__ returns objects" and np.lib.NumpyVersion(np.__version__) < "1.24.0":
        # numpy < 1.24 warns (FutureWarning, an error under the suite's settings) on
        # a list of array-likes that are not sequences, before any dtype is seen
        words = f"({words}|could not be read as a 2-D array of real numbers)"
    check_rejected(sink, value, ours, builtin, words, matrix=as_row)


@needs_torch
@pytest.mark.parametrize("sink", SINK_NAMES)
@pytest.mark.parametrize(
    "kind", ["meta device", "sparse", "complex32", "complex64 requires_grad", "bool"]
)
def test_an_unreadable_tensor_raises_our_error_naming_the_fix(sink: str, kind: str) -> None:
    check_rejected(sink, *torch_rejected()[kind], matrix=as_row)


@pytest.mark.parametrize("sink", ["put", "put_many", "put_batch", "get_or_compute"])
def test_a_keyboard_interrupt_from_array_passes_unchanged(sink: str) -> None:
    cache = new_cache()
    before = snapshot(cache, [KEY, OLD])
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as info:
        SINKS[sink][0](cache, ArrayRaises(interrupt), as_row)
    assert info.value is interrupt
    assert_untouched(cache, before, sink)
    assert cache.sync.flights.in_flight() == 0


def test_a_ragged_list_is_still_a_value_error() -> None:
    cache = new_cache()
    with pytest.raises(InvalidVectorError, match=r"^matrix could not be read as a 2-D array"):
        cache.sync.put_many([KEY, OLD], [[1.0, 2.0], [3.0]])
