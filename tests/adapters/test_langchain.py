"""embcache.langchain.CachedEmbeddings: LangChain's published standard suites for
embeddings (unmodified, subclassed), and our own behaviour tests over a
deterministic fake model."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from adapter_models import DIM, Recorder, vector  # noqa: E402
from conftest import TIMEOUT, in_threads, run  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings  # noqa: E402
from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

from embcache import (  # noqa: E402
    CacheKey,
    EmbcacheError,
    EmbeddingCache,
    InvalidVectorError,
    SyncEmbeddingCache,
)
from embcache.identity import ModelIdentity  # noqa: E402
from embcache.langchain import QUERY_SUFFIX, CachedEmbeddings  # noqa: E402


class FakeEmbeddings(Embeddings):
    """A deterministic LangChain model that records what it is asked."""

    def __init__(self, recorder: Recorder | None = None, dim: int = DIM, salt: str = "") -> None:
        self.recorder = recorder or Recorder()
        self.dim = dim
        self.salt = salt

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.recorder.documents(texts, self.dim, self.salt)

    def embed_query(self, text: str) -> list[float]:
        return self.recorder.query(text, self.dim, "q:" + self.salt)


class AsyncFakeEmbeddings(FakeEmbeddings):
    """The same with native async methods that record separately."""

    def __init__(self, recorder: Recorder | None = None, delay: float = 0.0) -> None:
        super().__init__(recorder)
        self.async_batches: list[list[str]] = []
        self.delay = delay

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.async_batches.append(list(texts))
        if self.delay:
            await asyncio.sleep(self.delay)
        return [vector(t, self.dim) for t in texts]

    async def aembed_query(self, text: str) -> list[float]:
        self.async_batches.append([text])
        if self.delay:
            await asyncio.sleep(self.delay)
        return vector(text, self.dim, "q:")


# --- LangChain's standard suites, unmodified ------------------------------------------------


class TestStandardUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[CachedEmbeddings]:
        return CachedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"embeddings": DeterministicFakeEmbedding(size=16), "model_version": "fake-16"}


class TestStandardIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[CachedEmbeddings]:
        return CachedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"embeddings": DeterministicFakeEmbedding(size=16), "model_version": "fake-16"}


class TestStandardIntegrationOverOurFake(EmbeddingsIntegrationTests):
    """The suite again over a model with native async methods and a shared cache."""

    @property
    def embeddings_class(self) -> type[CachedEmbeddings]:
        return CachedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {
            "embeddings": AsyncFakeEmbeddings(),
            "model_version": ModelIdentity("fake", dim=DIM),
            "cache": SHARED,
        }


SHARED = EmbeddingCache()


# --- behaviour -------------------------------------------------------------------------------

TEXTS = ["alpha", "beta", "alpha", "gamma", "beta", "delta"]


def test_documents_hits_duplicates_and_batches() -> None:
    model = FakeEmbeddings()
    embeddings = CachedEmbeddings(model, "fake-v1", batch_size=2)
    out = embeddings.embed_documents(TEXTS)
    assert out == [vector(t) for t in TEXTS]
    assert isinstance(out[0][0], float)
    # distinct misses only, in order, in batches of batch_size
    assert model.recorder.batches == [["alpha", "beta"], ["gamma", "delta"]]
    assert embeddings.embed_documents(["delta", "epsilon", "alpha"]) == [
        vector(t) for t in ["delta", "epsilon", "alpha"]
    ]
    assert model.recorder.batches[2:] == [["epsilon"]]
    embeddings.embed_documents(TEXTS)
    assert len(model.recorder.batches) == 3
    s = embeddings.stats
    assert (s.texts_requested, s.texts_embedded, s.model_calls) == (15, 5, 3)
    assert embeddings.embed_documents([]) == []


def test_queries_are_cached_apart_from_documents() -> None:
    model = FakeEmbeddings()
    embeddings = CachedEmbeddings(model, "fake-v1")
    doc = embeddings.embed_documents(["same text"])[0]
    query = embeddings.embed_query("same text")
    assert doc == vector("same text") and query == vector("same text", salt="q:")
    assert embeddings.embed_query("same text") == query
    assert model.recorder.queries == ["same text"]
    cache = embeddings.cache
    assert CacheKey.from_text("same text", "fake-v1") in cache
    assert CacheKey.from_text("same text", "fake-v1" + QUERY_SUFFIX) in cache
    assert embeddings.query_embedder.model_version == "fake-v1" + QUERY_SUFFIX


def test_async_methods() -> None:
    model = AsyncFakeEmbeddings()
    embeddings = CachedEmbeddings(model, "fake-v1")

    async def main() -> None:
        assert await embeddings.aembed_documents(TEXTS) == [vector(t) for t in TEXTS]
        assert await embeddings.aembed_query("q") == vector("q", salt="q:")
        assert await embeddings.aembed_query("q") == vector("q", salt="q:")

    run(main())
    assert model.async_batches == [["alpha", "beta", "gamma", "delta"], ["q"]]
    # the sync methods share the entries
    assert embeddings.embed_documents(["gamma"]) == [vector("gamma")]
    assert embeddings.embed_query("q") == vector("q", salt="q:")
    assert model.recorder.batches == [] and model.recorder.queries == []


def test_default_async_methods_of_the_wrapped_model() -> None:
    """A model with only sync methods: LangChain's default aembed_* run them in
    an executor."""
    model = FakeEmbeddings()
    embeddings = CachedEmbeddings(model, "fake-v1")
    assert run(embeddings.aembed_documents(["x", "x", "y"])) == [vector(t) for t in "xxy"]
    assert model.recorder.batches == [["x", "y"]]


def test_hits_and_misses_give_the_same_float32_values() -> None:
    class Irrational(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1 / 3, 2 / 3] for _ in texts]

        def embed_query(self, text: str) -> list[float]:
            return [1 / 7, 2 / 7]

    embeddings = CachedEmbeddings(Irrational(), "v")
    first = embeddings.embed_documents(["a"])
    assert first == embeddings.embed_documents(["a"])
    assert first[0] == np.float32([1 / 3, 2 / 3]).tolist()
    assert embeddings.embed_query("a") == embeddings.embed_query("a")


def test_two_model_versions_never_share_an_entry() -> None:
    cache = EmbeddingCache()
    a = CachedEmbeddings(FakeEmbeddings(salt="a"), ModelIdentity("m", dim=DIM), cache=cache)
    b = CachedEmbeddings(
        FakeEmbeddings(salt="b"), ModelIdentity("m", dim=DIM, normalized=True), cache=cache
    )
    assert a.model_version != b.model_version
    assert a.embed_documents(["t"]) == [vector("t", salt="a")]
    assert b.embed_documents(["t"]) == [vector("t", salt="b")]
    assert a.embed_query("t") != b.embed_query("t")
    assert len(cache) == 4


def test_concurrent_async_calls_embed_each_text_once() -> None:
    model = AsyncFakeEmbeddings(delay=0.005)
    embeddings = CachedEmbeddings(model, "fake-v1", batch_size=4)
    requests = [[f"text {(i * 7 + j) % 30}" for j in range(10)] for i in range(20)]

    async def main() -> list[list[list[float]]]:
        docs = asyncio.gather(*(embeddings.aembed_documents(r) for r in requests))
        queries = asyncio.gather(*(embeddings.aembed_query("one query") for _ in range(10)))
        out, q = await asyncio.gather(docs, queries)
        assert all(v == vector("one query", salt="q:") for v in q)
        return out

    results = run(main())
    for r, out in zip(requests, results):
        assert out == [vector(t) for t in r]
    counts = Counter(t for b in model.async_batches for t in b)
    assert counts == Counter({t for r in requests for t in r} | {"one query"})


def test_threads_sync_and_async_embed_each_text_once() -> None:
    recorder = Recorder(delay=0.02)
    model = FakeEmbeddings(recorder)
    embeddings = CachedEmbeddings(model, "fake-v1", cache=SyncEmbeddingCache())
    texts = [f"shared {i}" for i in range(12)]
    results = in_threads(
        lambda: embeddings.embed_documents(texts),
        lambda: embeddings.embed_documents(texts[::-1]),
        lambda: run(embeddings.aembed_documents(texts)),
        lambda: embeddings.embed_query("q"),
        lambda: embeddings.embed_query("q"),
    )
    assert results[0] == [vector(t) for t in texts]
    assert results[1] == [vector(t) for t in texts[::-1]]
    assert results[2] == results[0]
    assert results[3] == results[4] == vector("q", salt="q:")
    assert recorder.embedded == Counter(texts)
    assert recorder.queries == ["q"]


def test_a_failed_model_call_caches_nothing_and_raises() -> None:
    recorder = Recorder()
    embeddings = CachedEmbeddings(FakeEmbeddings(recorder), "fake-v1")
    embeddings.embed_documents(["warm"])
    recorder.fail = ConnectionError("model down")
    with pytest.raises(ConnectionError, match="model down"):
        embeddings.embed_documents(["warm", "new"])
    with pytest.raises(ConnectionError):
        embeddings.embed_query("new")
    recorder.fail = None
    for bad, match in [("nan", r"\[1, 0\] is nan"), ("short", "has 1 rows for 2 keys")]:
        recorder.bad = bad
        with pytest.raises(InvalidVectorError, match=match):
            embeddings.embed_documents(["a", "b"])
    assert len(embeddings.cache) == 1
    recorder.bad = None
    assert embeddings.embed_documents(["a", "warm"]) == [vector("a"), vector("warm")]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"embeddings": object()}, TypeError, "embeddings must be a langchain_core"),
        ({"embeddings": None}, TypeError, "embeddings must be a langchain_core"),
        ({"model_version": None}, TypeError, "model_version must be a str"),
        ({"model_version": ""}, ValueError, "non-empty"),
        ({"model_version": 7}, TypeError, "model_version must be a str"),
        ({"cache": {}}, TypeError, "cache must be an EmbeddingCache"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 1.5}, TypeError, "batch_size must be an int"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
    ],
)
def test_constructor_checks(kwargs: dict[str, Any], error: type, match: str) -> None:
    args: dict[str, Any] = {"embeddings": FakeEmbeddings(), "model_version": "v"}
    args.update(kwargs)
    with pytest.raises(error, match=match) as info:
        CachedEmbeddings(args.pop("embeddings"), args.pop("model_version"), **args)
    assert isinstance(info.value, EmbcacheError)


def test_bad_texts_are_rejected_and_change_nothing() -> None:
    recorder = Recorder()
    embeddings = CachedEmbeddings(FakeEmbeddings(recorder), "v")
    embeddings.embed_documents(["ok"])
    info = embeddings.cache.sync.get_cache_info()
    for call, match in [
        (lambda: embeddings.embed_documents("abc"), "not a single str"),  # type: ignore[arg-type]
        (lambda: embeddings.embed_documents(["a", 3]), r"texts\[1\] must be a str"),  # type: ignore[list-item]
        (lambda: embeddings.embed_documents(None), "sequence of str"),  # type: ignore[arg-type]
        (lambda: embeddings.embed_query(b"q"), "text must be a str"),  # type: ignore[arg-type]
        (lambda: embeddings.embed_query(None), "text must be a str"),  # type: ignore[arg-type]
        (lambda: run(embeddings.aembed_query(5)), "text must be a str"),  # type: ignore[arg-type]
        (lambda: run(embeddings.aembed_documents([None])), r"texts\[0\]"),  # type: ignore[list-item]
    ]:
        with pytest.raises(TypeError, match=match):
            call()
    with pytest.raises(ValueError, match="lone surrogate"):
        embeddings.embed_documents(["ok", "\ud800"])
    assert recorder.batches == [["ok"]]
    assert embeddings.cache.sync.get_cache_info() == info


def test_repr_and_properties() -> None:
    model = FakeEmbeddings()
    cache = EmbeddingCache()
    embeddings = CachedEmbeddings(model, "fake-v1", cache=cache)
    assert embeddings.embeddings is model and embeddings.cache is cache
    assert embeddings.model_version == "fake-v1"
    assert embeddings.document_embedder.key("x") == CacheKey.from_text("x", "fake-v1")
    assert "fake-v1" in repr(embeddings)


def test_thread_safety_smoke() -> None:
    embeddings = CachedEmbeddings(FakeEmbeddings(), "v")
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(200):
                text = f"t{(i * (w + 1)) % 50}"
                assert embeddings.embed_documents([text]) == [vector(text)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors
    assert embeddings.stats.texts_embedded == 50


# --- a ModelIdentity's dim, and what a sync call on the loop's thread is told ---------------


def test_model_identity_dim_is_checked_on_every_path() -> None:
    says_other = ModelIdentity("fake", dim=DIM + 1)
    for wrapped in (FakeEmbeddings(), AsyncFakeEmbeddings()):
        embeddings = CachedEmbeddings(wrapped, says_other)
        calls: list[Any] = [
            lambda e=embeddings: e.embed_documents(["a", "b"]),
            lambda e=embeddings: e.embed_query("q"),
            lambda e=embeddings: run(e.aembed_documents(["a", "b"])),
            lambda e=embeddings: run(e.aembed_query("q")),
        ]
        for call in calls:
            with pytest.raises(InvalidVectorError, match=f"has dim {DIM}, but the model identity"):
                call()
        assert len(embeddings.cache) == 0
    right = CachedEmbeddings(FakeEmbeddings(), ModelIdentity("fake", dim=DIM))
    assert right.embed_documents(["a"]) == [vector("a")]
    assert right.embed_query("q") == vector("q", DIM, "q:")


class GatedEmbeddings(FakeEmbeddings):
    """Async methods that wait for a gate: a task of the loop holds the texts."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.started.set()
        await self.gate.wait()
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        self.started.set()
        await self.gate.wait()
        return self.embed_query(text)


@pytest.mark.parametrize(
    ("async_method", "method", "arg"),
    [("aembed_documents", "embed_documents", ["x"]), ("aembed_query", "embed_query", "q")],
)
def test_sync_call_on_the_loop_thread_is_told_to_await(
    async_method: str, method: str, arg: Any
) -> None:
    async def scenario() -> str:
        model = GatedEmbeddings()
        embeddings = CachedEmbeddings(model, "gated")
        task = asyncio.create_task(getattr(embeddings, async_method)(arg))
        await model.started.wait()  # the task holds the texts' flight
        with pytest.raises(RuntimeError) as info:
            getattr(embeddings, method)(arg)
        model.gate.set()
        await task  # the async call is unharmed
        assert getattr(embeddings, method)(arg) == await task  # now a hit, no wait
        return str(info.value)

    message = run(scenario())
    assert message.startswith(f"CachedEmbeddings.{method} would deadlock")
    assert f"use 'await embeddings.{async_method}(...)' in that loop instead" in message
    assert "get_or_compute" not in message
