"""embcache.llamaindex.CachedEmbedding: a LlamaIndex BaseEmbedding over another
one, with the same guarantees as the LangChain adapter."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from adapter_models import DIM, Recorder, vector  # noqa: E402
from conftest import in_threads, run  # noqa: E402
from llama_index.core.bridge.pydantic import PrivateAttr  # noqa: E402
from llama_index.core.embeddings import BaseEmbedding, MockEmbedding  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402

from embcache import (  # noqa: E402
    CacheKey,
    EmbcacheError,
    EmbeddingCache,
    InvalidVectorError,
    SyncEmbeddingCache,
)
from embcache.identity import ModelIdentity  # noqa: E402
from embcache.llamaindex import CachedEmbedding  # noqa: E402


class FakeEmbedding(BaseEmbedding):
    """A deterministic LlamaIndex model that records what it is asked."""

    _recorder: Recorder = PrivateAttr()
    _salt: str = PrivateAttr()
    _delay: float = PrivateAttr()

    def __init__(
        self, recorder: Recorder | None = None, salt: str = "", delay: float = 0.0, **kw: Any
    ) -> None:
        super().__init__(model_name="fake", **kw)
        self._recorder = recorder or Recorder()
        self._salt = salt
        self._delay = delay

    @property
    def recorder(self) -> Recorder:
        return self._recorder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._recorder.query(query, DIM, "q:" + self._salt)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        if self._delay:
            await asyncio.sleep(self._delay)
        return self._recorder.query(query, DIM, "q:" + self._salt)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._recorder.documents([text], DIM, self._salt)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._recorder.documents(texts, DIM, self._salt)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if self._delay:
            await asyncio.sleep(self._delay)
        return self._recorder.documents(texts, DIM, self._salt)


TEXTS = ["alpha", "beta", "alpha", "gamma", "beta", "delta"]


def test_is_a_base_embedding_and_caches_batches() -> None:
    model = FakeEmbedding(embed_batch_size=2)
    cached = CachedEmbedding(model, "fake-v1")
    assert isinstance(cached, BaseEmbedding)
    assert cached.model_name == "fake" and cached.model_version == "fake-v1"
    out = cached.get_text_embedding_batch(TEXTS)
    assert out == [vector(t) for t in TEXTS]
    # one call of ours for the whole input; the distinct misses go to the wrapped
    # model together, which batches them by its own embed_batch_size
    assert model.recorder.batches == [["alpha", "beta"], ["gamma", "delta"]]
    assert cached.get_text_embedding("gamma") == vector("gamma")
    assert cached.get_text_embedding_batch(TEXTS[::-1]) == [vector(t) for t in TEXTS[::-1]]
    assert len(model.recorder.batches) == 2
    assert cached.stats.texts_embedded == 4


def test_queries_apart_from_texts_and_async() -> None:
    model = FakeEmbedding()
    cached = CachedEmbedding(model, "fake-v1")
    assert cached.get_query_embedding("same") == vector("same", salt="q:")
    assert cached.get_text_embedding("same") == vector("same")

    async def main() -> None:
        assert await cached.aget_query_embedding("same") == vector("same", salt="q:")
        assert await cached.aget_text_embedding("other") == vector("other")
        assert await cached.aget_text_embedding_batch(["x", "x", "other"]) == [
            vector("x"),
            vector("x"),
            vector("other"),
        ]

    run(main())
    assert model.recorder.queries == ["same"]
    assert model.recorder.embedded == Counter({"same": 1, "other": 1, "x": 1})


def test_views_of_its_embedders() -> None:
    cache = EmbeddingCache()
    cached = CachedEmbedding(FakeEmbedding(), "fake-v1", cache=cache)
    assert cached.cache is cache
    assert cached.document_embedder.key("x") == CacheKey.from_text("x", "fake-v1")
    assert cached.query_embedder.key("x") == CacheKey.from_text("x", "fake-v1|query")
    cached.get_query_embedding("q")
    cached.get_text_embedding_batch(["a", "b", "a"])
    s = cached.stats
    assert (s.texts_requested, s.texts_embedded, s.model_calls) == (4, 3, 2)


def test_nodes_are_embedded_through_the_cache() -> None:
    model = FakeEmbedding()
    cached = CachedEmbedding(model, "fake-v1")
    nodes = [TextNode(text="first"), TextNode(text="second"), TextNode(text="first")]
    for node in cached(nodes):
        assert node.embedding == vector(node.get_content(metadata_mode="embed"))  # type: ignore[arg-type]
    assert len(model.recorder.batches) == 1


def test_concurrent_async_calls_embed_each_text_once() -> None:
    model = FakeEmbedding(delay=0.005)
    cached = CachedEmbedding(model, "fake-v1", num_workers=4, embed_batch_size=5)
    requests = [[f"text {(i * 7 + j) % 30}" for j in range(12)] for i in range(16)]

    async def main() -> list[list[list[float]]]:
        q = asyncio.gather(*(cached.aget_query_embedding("one") for _ in range(8)))
        docs = asyncio.gather(*(cached.aget_text_embedding_batch(r) for r in requests))
        out, queries = await asyncio.gather(docs, q)
        assert all(v == vector("one", salt="q:") for v in queries)
        return out

    results = run(main())
    for r, out in zip(requests, results):
        assert out == [vector(t) for t in r]
    assert model.recorder.embedded == Counter({t for r in requests for t in r})
    assert model.recorder.queries == ["one"]


def test_threads_embed_each_text_once() -> None:
    recorder = Recorder(delay=0.02)
    cached = CachedEmbedding(FakeEmbedding(recorder), "v", cache=SyncEmbeddingCache())
    texts = [f"shared {i}" for i in range(10)]
    results = in_threads(
        lambda: cached.get_text_embedding_batch(texts),
        lambda: cached.get_text_embedding_batch(texts[::-1]),
        lambda: run(cached.aget_text_embedding_batch(texts)),
    )
    assert results[0] == results[2] == [vector(t) for t in texts]
    assert recorder.embedded == Counter(texts)


def test_model_identities_never_share_an_entry() -> None:
    cache = EmbeddingCache()
    a = CachedEmbedding(FakeEmbedding(salt="a"), ModelIdentity("m", dim=DIM), cache=cache)
    b = CachedEmbedding(
        FakeEmbedding(salt="b"), ModelIdentity("m", dim=DIM, prompt="query: "), cache=cache
    )
    assert a.get_text_embedding("t") == vector("t", salt="a")
    assert b.get_text_embedding("t") == vector("t", salt="b")
    assert CacheKey.from_text("t", a.model_version) in cache
    assert len(cache) == 2


def test_over_llamaindex_mock_embedding() -> None:
    cached = CachedEmbedding(MockEmbedding(embed_dim=3), "mock")
    assert cached.get_text_embedding_batch(["a", "b"]) == [[0.5] * 3, [0.5] * 3]
    assert cached.get_query_embedding("a") == [0.5] * 3


def test_failed_model_call_caches_nothing() -> None:
    recorder = Recorder()
    cached = CachedEmbedding(FakeEmbedding(recorder), "v")
    recorder.fail = ConnectionError("down")
    with pytest.raises(ConnectionError):
        cached.get_text_embedding_batch(["a", "b"])
    recorder.fail = None
    recorder.bad = "nan"
    with pytest.raises(ValueError, match="is nan"):
        cached.get_text_embedding_batch(["a", "b"])
    assert len(cached.cache) == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((object(), "v"), {}, TypeError, "embed_model must be a llama_index BaseEmbedding"),
        ((None, "v"), {}, TypeError, "embed_model must be a llama_index BaseEmbedding"),
        (("model", None), {}, TypeError, "model_version must be a str"),
        (("model", ""), {}, ValueError, "non-empty"),
        (("model", 3), {}, TypeError, "model_version must be a str"),
        (("model", "v"), {"cache": []}, TypeError, "cache must be an EmbeddingCache"),
        (("model", "v"), {"timeout": 0}, ValueError, "timeout"),
    ],
)
def test_constructor_checks(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type, match: str
) -> None:
    if args[0] == "model":
        args = (FakeEmbedding(), *args[1:])
    with pytest.raises(error, match=match) as info:
        CachedEmbedding(*args, **kwargs)
    assert isinstance(info.value, EmbcacheError)


def test_bad_texts_are_rejected_and_change_nothing() -> None:
    recorder = Recorder()
    cached = CachedEmbedding(FakeEmbedding(recorder), "v")
    cached.get_text_embedding("ok")
    info = cached.cache.sync.get_cache_info()
    for call, error in [
        (lambda: cached.get_text_embedding(3), TypeError),  # type: ignore[arg-type]
        (lambda: cached.get_query_embedding(None), TypeError),  # type: ignore[arg-type]
        (lambda: cached.get_text_embedding_batch(["a", b"b"]), TypeError),  # type: ignore[list-item]
        (lambda: run(cached.aget_query_embedding(1.0)), TypeError),  # type: ignore[arg-type]
        (lambda: cached.get_text_embedding("\udfff"), ValueError),
    ]:
        with pytest.raises(error) as exc:
            call()
        assert isinstance(exc.value, EmbcacheError)
    assert recorder.batches == [["ok"]]
    assert cached.cache.sync.get_cache_info() == info


def test_model_identity_dim_is_checked_on_every_path() -> None:
    says_other = ModelIdentity("fake", dim=DIM + 1)
    cached = CachedEmbedding(FakeEmbedding(), says_other)
    calls: list[Any] = [
        lambda: cached.get_text_embedding("a"),
        lambda: cached.get_text_embedding_batch(["a", "b"]),
        lambda: cached.get_query_embedding("q"),
        lambda: run(cached.aget_text_embedding("a")),
        lambda: run(cached.aget_text_embedding_batch(["a", "b"])),
        lambda: run(cached.aget_query_embedding("q")),
    ]
    for call in calls:
        with pytest.raises(InvalidVectorError, match=f"has dim {DIM}, but the model identity"):
            call()
    assert len(cached.cache) == 0
    right = CachedEmbedding(FakeEmbedding(), ModelIdentity("fake", dim=DIM))
    assert right.get_text_embedding_batch(["a"]) == [vector("a")]
    assert right.get_query_embedding("q") == vector("q", DIM, "q:")
    assert run(right.aget_text_embedding("b")) == vector("b")
    assert run(right.aget_query_embedding("r")) == vector("r", DIM, "q:")
