"""CachedEmbedder: a cache in front of any embedding function, sync or async,
with a fake deterministic model that counts its calls and batch sizes."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
from conftest import TIMEOUT, in_threads, run
from hypothesis import given
from hypothesis import strategies as st

from embcache import (
    CacheKey,
    DimensionMismatchError,
    EmbcacheError,
    EmbeddingCache,
    InvalidKeyError,
    InvalidVectorError,
    SyncEmbeddingCache,
)
from embcache.embedder.embedder import CachedEmbedder, EmbedderStats
from embcache.errors import ArgumentTypeError, CallContextError

DIM = 8


def vector(text: str, dim: int = DIM) -> np.ndarray:
    """The fake model's embedding of `text`: bytes of its SHA-256, scaled."""
    digest = hashlib.sha256(text.encode()).digest()
    return np.frombuffer(digest[:dim], dtype=np.uint8).astype(np.float32) / 255.0


def expected(texts: list[str], dim: int = DIM) -> np.ndarray:
    return np.stack([vector(t, dim) for t in texts]) if texts else np.zeros((0, dim), np.float32)


class Model:
    """A deterministic synchronous model that records every batch it gets."""

    def __init__(self, dim: int = DIM, delay: float = 0.0) -> None:
        self.dim = dim
        self.delay = delay
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.batches.append(list(texts))
            self.threads.add(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        return np.stack([vector(t, self.dim) for t in texts]).astype(np.float64)

    @property
    def embedded(self) -> Counter[str]:
        return Counter(t for b in self.batches for t in b)


class AsyncModel(Model):
    """The same model behind ``async def __call__``."""

    async def __call__(self, texts: list[str]) -> np.ndarray:  # type: ignore[override]
        self.batches.append(list(texts))
        if self.delay:
            await asyncio.sleep(self.delay)
        return np.stack([vector(t, self.dim) for t in texts])


TEXTS = ["alpha", "beta", "gamma", "alpha", "delta", "beta", "epsilon"]


# --- sync and async models, both entry points -----------------------------------------------


@pytest.mark.parametrize("model_cls", [Model, AsyncModel])
@pytest.mark.parametrize("entry", ["embed", "embed_sync"])
def test_embeds_in_input_order_and_caches(model_cls: type, entry: str) -> None:
    model = model_cls()
    embedder = CachedEmbedder(model, "fake-v1", batch_size=2)

    def call(texts: list[str]) -> np.ndarray:
        if entry == "embed":
            return run(embedder.embed(texts))  # type: ignore[no-any-return]
        return embedder.embed_sync(texts)

    m = call(TEXTS)
    assert m.dtype == np.float32 and m.shape == (len(TEXTS), DIM) and m.flags.c_contiguous
    np.testing.assert_array_equal(m, expected(TEXTS))
    # only the distinct misses, in order, in batches of batch_size
    assert model.batches == [["alpha", "beta"], ["gamma", "delta"], ["epsilon"]]
    m = call(["epsilon", "zeta", "alpha"])
    np.testing.assert_array_equal(m, expected(["epsilon", "zeta", "alpha"]))
    assert model.batches[3:] == [["zeta"]]
    call(TEXTS)
    assert len(model.batches) == 4  # all hits: no model call
    assert embedder.stats == EmbedderStats(
        texts_requested=17,
        texts_from_cache=11,
        texts_embedded=6,
        model_calls=4,
        model_calls_saved=(4 + 2 + 4) - 4,
    )


def test_vectors_land_under_from_text_keys() -> None:
    cache = EmbeddingCache()
    embedder = CachedEmbedder(Model(), "fake-v1", cache=cache)
    embedder.embed_sync(["hello"])
    k = CacheKey.from_text("hello", "fake-v1")
    assert embedder.key("hello") == k
    np.testing.assert_array_equal(cache.sync.get(k), vector("hello"))
    # a vector put by hand is served as a hit
    cache.sync.put(CacheKey.from_text("manual", "fake-v1"), np.full(DIM, 3.0))
    model = embedder.embed_fn
    assert isinstance(model, Model)
    np.testing.assert_array_equal(embedder.embed_sync(["manual"]), [np.full(DIM, 3.0)])
    assert model.batches == [["hello"]]


def test_model_versions_never_share_vectors() -> None:
    cache = EmbeddingCache()
    v1, v2 = Model(), Model(dim=3)
    a = CachedEmbedder(v1, "model-a", cache=cache)
    b = CachedEmbedder(v2, "model-b", cache=cache)
    a.embed_sync(["same text"])
    assert b.embed_sync(["same text"]).shape == (1, 3)
    assert v2.batches == [["same text"]] and len(cache) == 2


def test_sync_model_runs_off_the_event_loop() -> None:
    model = Model(delay=0.15)
    embedder = CachedEmbedder(model, "fake-v1")
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> np.ndarray:
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        m = await embedder.embed(["slow", "model"])
        stop.set()
        await task
        return m

    loop_thread = threading.get_ident()
    np.testing.assert_array_equal(run(main()), expected(["slow", "model"]))
    assert ticks >= 5  # the loop kept running while the model worked
    assert model.threads and loop_thread not in model.threads


def test_callable_returning_an_awaitable() -> None:
    amodel = AsyncModel()

    def model(texts: list[str]) -> Any:  # a plain function handing back a coroutine
        return amodel(texts)

    embedder = CachedEmbedder(model, "fake-v1")
    np.testing.assert_array_equal(run(embedder.embed(["a", "b"])), expected(["a", "b"]))
    np.testing.assert_array_equal(embedder.embed_sync(["c", "a"]), expected(["c", "a"]))
    assert amodel.batches == [["a", "b"], ["c"]]

    async def inside_a_loop() -> None:
        with pytest.raises(CallContextError, match="cannot await"):
            embedder.embed_sync(["d"])

    run(inside_a_loop())
    assert CacheKey.from_text("d", "fake-v1") not in embedder.cache


def test_async_partial_is_recognised() -> None:
    amodel = AsyncModel()

    async def scaled(texts: list[str], factor: float) -> np.ndarray:
        return await amodel(texts) * factor  # type: ignore[no-any-return]

    embedder = CachedEmbedder(functools.partial(scaled, factor=2.0), "fake-v1")
    np.testing.assert_array_equal(embedder.embed_sync(["x"]), expected(["x"]) * 2)


def test_embed_sync_refuses_an_async_model_inside_a_running_loop() -> None:
    model = AsyncModel()
    embedder = CachedEmbedder(model, "fake-v1")

    async def main() -> None:
        with pytest.raises(CallContextError, match="use 'await embedder.embed"):
            embedder.embed_sync(["a"])

    run(main())
    assert model.batches == [] and embedder.stats.texts_requested == 0


def test_a_sync_cache_serves_both_entry_points() -> None:
    cache = SyncEmbeddingCache(dim=DIM)
    model = Model()
    embedder = CachedEmbedder(model, "fake-v1", cache=cache)
    assert embedder.cache is cache
    np.testing.assert_array_equal(run(embedder.embed(["a", "b"])), expected(["a", "b"]))
    np.testing.assert_array_equal(embedder.embed_sync(["b", "c"]), expected(["b", "c"]))
    assert model.batches == [["a", "b"], ["c"]]
    assert embedder.embed_sync([]).shape == (0, DIM)


def test_empty_input() -> None:
    model = Model()
    embedder = CachedEmbedder(model, "fake-v1")
    out = run(embedder.embed([]))
    assert out.shape == (0, 0) and out.dtype == np.float32
    assert embedder.embed_sync(()).shape == (0, 0)
    assert CachedEmbedder(model, "v", cache=EmbeddingCache(dim=5)).embed_sync([]).shape == (0, 5)
    assert model.batches == []
    assert embedder.stats == EmbedderStats(0, 0, 0, 0, 0)


def test_iterables_and_order_with_many_duplicates() -> None:
    model = Model()
    embedder = CachedEmbedder(model, "fake-v1", batch_size=3)
    texts = [f"t{i % 7}" for i in range(50)]
    m = embedder.embed_sync(t for t in texts)
    np.testing.assert_array_equal(m, expected(texts))
    assert model.batches == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
    s = embedder.stats
    assert (s.texts_requested, s.texts_embedded, s.texts_from_cache) == (50, 7, 43)
    assert (s.model_calls, s.model_calls_saved) == (3, 17 - 3)


# --- stats -------------------------------------------------------------------------------


def test_stats_definition() -> None:
    model = Model()
    embedder = CachedEmbedder(model, "fake-v1", batch_size=2)
    embedder.embed_sync(["a", "b", "a", "c"])  # misses a, b, c: calls [a, b], [c]
    assert embedder.stats == EmbedderStats(4, 1, 3, 2, 0)
    embedder.embed_sync(["a", "b", "c", "d"])  # miss d: one call instead of two
    assert embedder.stats == EmbedderStats(8, 4, 4, 3, 1)
    embedder.embed_sync(["a"] * 5)  # all hits: three calls saved
    s = embedder.stats
    assert s == EmbedderStats(13, 9, 4, 3, 4)
    assert s.texts_requested == s.texts_from_cache + s.texts_embedded
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.model_calls = 0  # type: ignore[misc]


# the model's answer for misses [start, stop) of a call is named embed_fn(misses[start:stop])


def test_failed_calls_are_not_counted_and_cache_nothing() -> None:
    class Flaky(Model):
        def __init__(self) -> None:
            super().__init__()
            self.mode = "ok"

        def __call__(self, texts: list[str]) -> np.ndarray:
            out = super().__call__(texts)
            if self.mode == "raise":
                raise ConnectionError("model down")
            if self.mode == "nan":
                out[-1, 0] = np.nan
            if self.mode == "short":
                out = out[:-1]
            if self.mode == "flat":
                out = out.ravel()
            if self.mode == "dims" and len(self.batches) % 2 == 0:
                out = out[:, :4]
            return out

    model = Flaky()
    embedder = CachedEmbedder(model, "fake-v1", batch_size=2)
    cache = embedder.cache
    embedder.embed_sync(["warm"])
    for mode, error, match in [
        ("raise", ConnectionError, "model down"),
        ("nan", InvalidVectorError, r"^embed_fn\(misses\[0:2\]\)\[1, 0\] is nan"),
        ("short", InvalidVectorError, r"^embed_fn\(misses\[0:2\]\) has 1 rows for 2 keys"),
        ("flat", InvalidVectorError, r"^embed_fn\(misses\[0:2\]\) must be 2-D .*shape \(16,\)"),
        ("dims", DimensionMismatchError, r"^embed_fn\(misses\[2:3\]\) has dim 8, .* dim 4"),
    ]:
        model.mode = mode
        with pytest.raises(error, match=match):
            embedder.embed_sync(["warm", "a", "b", "c"])
        with pytest.raises(error, match=match):
            run(embedder.embed(["a", "b", "c", "warm"]))
        assert len(cache) == 1, mode  # nothing of a failed call is cached
    assert embedder.stats == EmbedderStats(1, 0, 1, 1, 0)
    model.mode = "ok"
    np.testing.assert_array_equal(embedder.embed_sync(["a", "warm"]), expected(["a", "warm"]))
    assert len(cache) == 2


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_embeds_embed_each_text_once() -> None:
    model = AsyncModel(delay=0.005)
    embedder = CachedEmbedder(model, "fake-v1", batch_size=4)
    requests = [[f"text {(i * 7 + j) % 40}" for j in range(12)] for i in range(30)]

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(embedder.embed(r) for r in requests))

    results = run(main())
    for r, m in zip(requests, results):
        np.testing.assert_array_equal(m, expected(r))
    distinct = {t for r in requests for t in r}
    assert model.embedded == Counter(distinct)
    assert all(len(b) <= 4 for b in model.batches)
    s = embedder.stats
    assert s.texts_embedded == len(distinct) and s.model_calls == len(model.batches)
    assert s.texts_requested == 360 == s.texts_from_cache + s.texts_embedded


def test_threads_embed_each_text_once() -> None:
    model = Model(delay=0.003)
    embedder = CachedEmbedder(model, "fake-v1", batch_size=5)
    embedder.embed_sync([])  # the cache's flights exist before the threads race
    requests = [[f"t{(i * 3 + j) % 25}" for j in range(10)] for i in range(24)]
    results: list[Any] = [None] * len(requests)

    def worker(w: int) -> None:
        for i in range(w, len(requests), 8):
            results[i] = embedder.embed_sync(requests[i])

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive()
    for r, m in zip(requests, results):
        np.testing.assert_array_equal(m, expected(r))
    assert model.embedded == Counter({t for r in requests for t in r})
    assert embedder.stats.texts_requested == 240


TWENTY = [f"shared {i}" for i in range(20)]


@pytest.mark.parametrize("entry", ["embed", "embed_sync"])
def test_two_embedders_over_one_sync_cache_embed_each_text_once(entry: str) -> None:
    """Embedders over one SyncEmbeddingCache share its one registry, whichever
    entry point and thread they are called from."""
    cache = SyncEmbeddingCache()
    model = Model(delay=0.02)
    first = CachedEmbedder(model, "fake-v1", cache=cache, batch_size=8)
    second = CachedEmbedder(model, "fake-v1", cache=cache, batch_size=8)

    def call(embedder: CachedEmbedder) -> Any:
        if entry == "embed":
            return lambda: run(embedder.embed(TWENTY))
        return lambda: embedder.embed_sync(TWENTY)

    results = in_threads(call(first), call(second), call(first), call(second))
    for m in results:
        np.testing.assert_array_equal(m, expected(TWENTY))
    assert model.embedded == Counter(TWENTY)
    assert first.stats.texts_embedded + second.stats.texts_embedded == 20


def test_two_embedders_on_one_loop_embed_each_text_once() -> None:
    cache = SyncEmbeddingCache()
    model = AsyncModel(delay=0.01)
    first = CachedEmbedder(model, "fake-v1", cache=cache)
    second = CachedEmbedder(model, "fake-v1", cache=cache)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(first.embed(TWENTY), second.embed(TWENTY[::-1]))

    a, b = run(main())
    np.testing.assert_array_equal(a, expected(TWENTY))
    np.testing.assert_array_equal(b, expected(TWENTY[::-1]))
    assert model.embedded == Counter(TWENTY)


@pytest.mark.parametrize("cache_kind", ["async", "sync"])
def test_embed_and_embed_sync_racing_embed_once(cache_kind: str) -> None:
    cache: Any = EmbeddingCache() if cache_kind == "async" else SyncEmbeddingCache()
    model = Model(delay=0.02)
    embedder = CachedEmbedder(model, "fake-v1", cache=cache)
    results = in_threads(
        lambda: run(embedder.embed(["one text", "a"])),
        lambda: embedder.embed_sync(["one text", "b"]),
        lambda: embedder.embed_sync(["one text"]),
    )
    np.testing.assert_array_equal(results[0], expected(["one text", "a"]))
    np.testing.assert_array_equal(results[1], expected(["one text", "b"]))
    np.testing.assert_array_equal(results[2], expected(["one text"]))
    assert model.embedded["one text"] == 1


def test_embedder_and_get_or_compute_share_flights() -> None:
    """A plain get_or_compute on the cache waits for the embedder's model call."""
    cache = EmbeddingCache()
    gate = threading.Event()

    def slow_model(texts: list[str]) -> np.ndarray:
        assert gate.wait(TIMEOUT)
        return expected(texts)

    embedder = CachedEmbedder(slow_model, "fake-v1", cache=cache)
    calls: list[list[CacheKey]] = []

    def other(keys: list[CacheKey]) -> np.ndarray:
        calls.append(keys)
        return np.zeros((len(keys), DIM))

    def get_or_compute() -> np.ndarray:
        while cache.sync.flights.in_flight() == 0:
            time.sleep(0.001)
        threading.Timer(0.02, gate.set).start()
        return cache.sync.get_or_compute([embedder.key("x")], other)

    a, b = in_threads(lambda: embedder.embed_sync(["x"]), get_or_compute)
    np.testing.assert_array_equal(a, expected(["x"]))
    np.testing.assert_array_equal(b, expected(["x"]))
    assert calls == []


@pytest.mark.parametrize("entry", ["embed", "embed_sync"])
def test_model_errors_name_embed_fn_the_batch_row_and_element(entry: str) -> None:
    def model(texts: list[str]) -> np.ndarray:
        out = expected(texts)
        if len(texts) == 1:  # the second batch
            out[0, 5] = np.nan
        return out

    embedder = CachedEmbedder(model, "fake-v1", batch_size=3)
    texts = ["a", "b", "c", "d"]
    match = r"^embed_fn\(misses\[3:4\]\)\[0, 5\] is nan"
    with pytest.raises(InvalidVectorError, match=match):
        if entry == "embed":
            run(embedder.embed(texts))
        else:
            embedder.embed_sync(texts)
    assert len(embedder.cache) == 0


# --- bad input -------------------------------------------------------------------------------


def test_texts_must_be_strings() -> None:
    model = Model()
    embedder = CachedEmbedder(model, "fake-v1")
    with pytest.raises(ArgumentTypeError, match=r"texts\[2\] must be a str, got int"):
        embedder.embed_sync(["a", "b", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"texts\[0\] must be a str, got bytes"):
        run(embedder.embed([b"a"]))  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single str"):
        embedder.embed_sync("abc")
    with pytest.raises(TypeError, match="sequence of str, got int"):
        embedder.embed_sync(5)  # type: ignore[arg-type]
    assert model.batches == [] and embedder.stats.texts_requested == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"embed_fn": None}, TypeError, "embed_fn must be callable"),
        ({"model_version": ""}, ValueError, "non-empty"),
        ({"batch_size": np.bool_(True)}, TypeError, "batch_size must be an int"),
        ({"batch_size": np.int64(0)}, ValueError, "batch_size must be >= 1"),
        ({"model_version": 3}, TypeError, "model_version must be a str"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": -4}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an int"),
        ({"batch_size": True}, TypeError, "batch_size must be an int"),
        ({"batch_size": "8"}, TypeError, "batch_size must be an int"),
        (
            {"cache": {}},
            TypeError,
            "cache must be an EmbeddingCache, a SyncEmbeddingCache or a SharedEmbeddingCache",
        ),
    ],
)
def test_constructor_checks(kwargs: dict[str, Any], error: type, match: str) -> None:
    args: dict[str, Any] = {"embed_fn": Model(), "model_version": "v"}
    args.update(kwargs)
    embed_fn = args.pop("embed_fn")
    model_version = args.pop("model_version")
    with pytest.raises(error, match=match) as info:
        CachedEmbedder(embed_fn, model_version, **args)
    assert isinstance(info.value, EmbcacheError)


def test_numpy_integers_are_batch_sizes() -> None:
    model = Model()
    embedder = CachedEmbedder(model, "fake-v1", batch_size=np.int32(2))
    assert embedder.batch_size == 2 and type(embedder.batch_size) is int
    embedder.embed_sync(["a", "b", "c"])
    assert [len(b) for b in model.batches] == [2, 1]


def test_properties_and_defaults() -> None:
    model = Model()
    embedder = CachedEmbedder(model, "fake-v1")
    assert embedder.batch_size == 256 and embedder.model_version == "fake-v1"
    assert embedder.embed_fn is model and isinstance(embedder.cache, EmbeddingCache)
    assert "fake-v1" in repr(embedder)
    texts = [f"t{i}" for i in range(600)]
    embedder.embed_sync(texts)
    assert [len(b) for b in model.batches] == [256, 256, 88]


def test_exported_from_the_package() -> None:
    import embcache

    assert embcache.CachedEmbedder is CachedEmbedder
    assert embcache.EmbedderStats is EmbedderStats
    assert {"CachedEmbedder", "EmbedderStats"} <= set(embcache.__all__)


# --- keys, exact statistics, model identity ----------------------------------------------------


@given(st.lists(st.text(max_size=40), max_size=12))
def test_keys_are_from_text_keys(texts: list[str]) -> None:
    texts = [t for t in texts if not any("\ud800" <= c <= "\udfff" for c in t)]
    embedder = CachedEmbedder(Model(), "fake-v1")
    assert [embedder.key(t) for t in texts] == [CacheKey.from_text(t, "fake-v1") for t in texts]
    m = embedder.embed_sync(texts)
    for t, row in zip(texts, m):
        np.testing.assert_array_equal(
            embedder.cache.sync.get(CacheKey.from_text(t, "fake-v1")), row
        )


@pytest.mark.parametrize("entry", ["embed", "embed_sync"])
def test_the_cache_counts_each_lookup_once(entry: str) -> None:
    embedder = CachedEmbedder(Model(), "fake-v1")

    def call(texts: list[str]) -> np.ndarray:
        return run(embedder.embed(texts)) if entry == "embed" else embedder.embed_sync(texts)

    info = lambda: embedder.cache.sync.get_cache_info()  # noqa: E731
    call(["a"])  # one miss
    assert (info().hits, info().misses) == (0, 1)
    call(["a"])  # one hit
    assert (info().hits, info().misses) == (1, 1)
    call(["a", "b", "c", "b"])  # a hit, then b, c, b missed in one lookup
    assert (info().hits, info().misses) == (2, 4)
    call(["b", "c"])
    assert (info().hits, info().misses) == (4, 4)


def test_lone_surrogates_are_rejected() -> None:
    model = Model()
    embedder = CachedEmbedder(model, "fake-v1")
    with pytest.raises(InvalidKeyError, match="lone surrogate") as info:
        embedder.embed_sync(["fine", "\ud800"])
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="lone surrogate"):
        embedder.key("\udfff")
    with pytest.raises(TypeError, match="text must be a str"):
        embedder.key(b"x")  # type: ignore[arg-type]
    assert model.batches == [] and len(embedder.cache) == 0


def test_a_model_identity_as_model_version() -> None:
    from embcache.identity import ModelIdentity

    ident = ModelIdentity("fake", dim=DIM, normalized=True)
    embedder = CachedEmbedder(Model(), ident)
    assert embedder.model_version == ident.model_version and embedder.identity is ident
    embedder.embed_sync(["x"])
    assert CacheKey.from_text("x", ident.model_version) in embedder.cache


def test_get_cache_info_is_synchronous_for_both_caches() -> None:
    for cache in (EmbeddingCache(), SyncEmbeddingCache()):
        embedder = CachedEmbedder(Model(), "fake-v1", cache=cache)
        embedder.embed_sync(["a", "b"])
        info = embedder.get_cache_info()
        assert info.size == 2 and info.misses == 2 and info.max_entries == 100_000


# --- embed_one / embed_one_sync: one text, one vector -----------------------------------


@pytest.mark.parametrize("entry", ["embed_one", "embed_one_sync"])
def test_embed_one_is_embed_of_one_text_as_a_vector(entry: str) -> None:
    model = Model()
    embedder = CachedEmbedder(model, "m", cache=EmbeddingCache())

    def one(text: Any) -> np.ndarray:
        if entry == "embed_one":
            return run(embedder.embed_one(text))  # type: ignore[no-any-return]
        return embedder.embed_one_sync(text)

    miss, hit = one("a query"), one("a query")
    assert miss.shape == hit.shape == (DIM,) and miss.dtype == np.float32
    np.testing.assert_array_equal(miss, vector("a query"))
    np.testing.assert_array_equal(hit, miss)
    np.testing.assert_array_equal(embedder.embed_sync(["a query"])[0], miss)
    assert model.batches == [["a query"]]
    miss[0] = -1.0  # the caller's own array
    np.testing.assert_array_equal(one("a query"), vector("a query"))
    stats = embedder.stats
    assert (stats.texts_requested, stats.texts_from_cache, stats.texts_embedded) == (4, 3, 1)
    assert (stats.model_calls, stats.model_calls_saved) == (1, 3)
    for bad in (["a query"], b"a query", None, 3):
        with pytest.raises(ArgumentTypeError, match="text must be a str"):
            one(bad)
    assert embedder.stats == stats and model.batches == [["a query"]]


def test_embed_one_sync_refuses_an_async_model_inside_a_running_loop() -> None:
    async def model(texts: list[str]) -> np.ndarray:
        return expected(texts)

    embedder = CachedEmbedder(model, "m")
    np.testing.assert_array_equal(embedder.embed_one_sync("x"), vector("x"))  # no loop: fine

    async def inside() -> None:
        with pytest.raises(CallContextError, match="event loop is running"):
            embedder.embed_one_sync("y")

    run(inside())


def test_a_non_str_text_is_refused_even_with_an_encode_method() -> None:
    class Impostor:
        def encode(self) -> bytes:
            return b"looks like text"

    embedder = CachedEmbedder(Model(), "m", cache=SyncEmbeddingCache(100))
    with pytest.raises(ArgumentTypeError, match=r"texts\[1\] must be a str, got Impostor"):
        embedder.embed_sync(["fine", Impostor()])  # type: ignore[list-item]
    with pytest.raises(InvalidKeyError, match="surrogate"):
        embedder.embed_sync(["fine", "bad \ud800"])
    assert len(embedder.cache) == 0  # type: ignore[arg-type]


def test_texts_changed_while_embed_waits_change_nothing() -> None:
    """The texts of the misses are taken when the call looks them up: a caller
    changing its list while the model runs cannot put one text's vector under
    another's key."""
    model = Model(delay=0.05)
    embedder = CachedEmbedder(model, "m", cache=EmbeddingCache(100))
    texts = ["alpha", "beta"]

    async def main() -> np.ndarray:
        call = asyncio.ensure_future(embedder.embed(texts))
        await asyncio.sleep(0.01)
        texts[:] = ["gamma", "delta"]
        return await call

    got = run(main())
    np.testing.assert_array_equal(got, expected(["alpha", "beta"]))
    np.testing.assert_array_equal(embedder.embed_sync(["alpha"]), expected(["alpha"]))
    assert model.batches == [["alpha", "beta"]]


def test_a_list_changed_between_keying_and_the_model_call_stores_no_wrong_vector() -> None:
    """The caller's list rewritten after embed_sync has keyed it (here by the
    cache's clock, which its lookup reads: the moment another thread could run):
    the model gets the texts that were keyed, so every key keeps its own text's
    vector."""
    texts = ["alpha", "beta"]
    rewrites = []

    def clock() -> float:
        if rewrites:
            texts[:] = rewrites.pop()
        return time.monotonic()

    model = Model()
    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100, 3600, clock=clock))
    rewrites.append(["gamma", "delta"])
    got = embedder.embed_sync(texts)
    np.testing.assert_array_equal(got, expected(["alpha", "beta"]))
    assert model.batches == [["alpha", "beta"]]
    for text in ("alpha", "beta", "gamma", "delta"):
        np.testing.assert_array_equal(embedder.embed_sync([text]), expected([text]))
