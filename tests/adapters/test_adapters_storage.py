"""``storage=`` of the sentence-transformers helper and the LangChain and
LlamaIndex adapters: the rows of the default cache they make (documents and
queries share it); a cache passed in keeps its own; the storage is part of no
key; a bad storage is rejected before anything is made."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from adapter_models import DIM, FakeSentenceTransformer, Recorder, vector

from embcache import CacheKey, EmbcacheError, EmbeddingCache, SyncEmbeddingCache
from embcache.errors import ArgumentTypeError, ArgumentValueError
from embcache.sentence_transformers import cached_embedder

STORAGES = ["float32", "float16", "bfloat16", "int8"]
HAVE_LANGCHAIN = importlib.util.find_spec("langchain_core") is not None
HAVE_LLAMAINDEX = importlib.util.find_spec("llama_index") is not None


def langchain_adapter(recorder: Recorder, **kwargs: Any) -> Any:
    from langchain_core.embeddings import Embeddings

    from embcache.langchain import CachedEmbeddings

    class Fake(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return recorder.documents(texts, DIM)

        def embed_query(self, text: str) -> list[float]:
            return recorder.query(text, DIM, "q:")

    return CachedEmbeddings(Fake(), "fake-v1", **kwargs)


def llamaindex_adapter(recorder: Recorder, **kwargs: Any) -> Any:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from embcache.llamaindex import CachedEmbedding

    class Fake(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return recorder.query(query, DIM, "q:")

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return recorder.query(query, DIM, "q:")

        def _get_text_embedding(self, text: str) -> list[float]:
            return recorder.documents([text], DIM)[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return recorder.documents(texts, DIM)

    return CachedEmbedding(Fake(model_name="fake"), "fake-v1", **kwargs)


ADAPTERS = [
    pytest.param(
        langchain_adapter,
        "embed_documents",
        "embed_query",
        marks=pytest.mark.skipif(not HAVE_LANGCHAIN, reason="langchain-core is not installed"),
        id="langchain",
    ),
    pytest.param(
        llamaindex_adapter,
        "get_text_embedding_batch",
        "get_query_embedding",
        marks=pytest.mark.skipif(not HAVE_LLAMAINDEX, reason="llama-index-core is not installed"),
        id="llamaindex",
    ),
]


@pytest.mark.parametrize("make, documents, query", ADAPTERS)
@pytest.mark.parametrize("storage", STORAGES)
def test_adapters_pass_storage_to_their_default_cache(
    make: Callable[..., Any], documents: str, query: str, storage: str
) -> None:
    recorder = Recorder()
    adapter = make(recorder, storage=storage)
    cache = adapter.cache
    assert isinstance(cache, EmbeddingCache) and cache.storage == storage
    # documents and queries, sync and async: one cache
    assert adapter.query_embedder.cache is cache and adapter.document_embedder.storage == storage
    first = getattr(adapter, documents)(["alpha", "beta"])
    getattr(adapter, query)("alpha?")
    again = getattr(adapter, documents)(["alpha", "beta"])
    assert recorder.batches == [["alpha", "beta"]] and recorder.queries == ["alpha?"]
    assert cache.sync.get_cache_info().storage == storage and len(cache.sync) == 3
    # the storage is part of no key
    assert CacheKey.from_text("alpha", "fake-v1") in cache.sync
    assert CacheKey.from_text("alpha?", "fake-v1|query") in cache.sync
    # a hit and a miss give the same floats: what the cache holds
    assert again == first
    np.testing.assert_allclose(first, [vector(t) for t in ("alpha", "beta")], atol=1 / 256)


@pytest.mark.parametrize("make, documents, query", ADAPTERS)
def test_adapters_keep_a_given_caches_storage_and_check_storage(
    make: Callable[..., Any], documents: str, query: str
) -> None:
    cache = SyncEmbeddingCache(storage="bfloat16")
    adapter = make(Recorder(), cache=cache)
    assert adapter.cache is cache and adapter.query_embedder.storage == "bfloat16"
    assert make(Recorder(), cache=cache, storage="bfloat16").cache is cache
    for kwargs, error, words in [
        ({"cache": cache, "storage": "int8"}, ArgumentValueError, "stores 'bfloat16'"),
        ({"storage": "half"}, ArgumentValueError, "'float32', 'float16', 'bfloat16', 'int8'"),
        ({"storage": 8}, ArgumentTypeError, "storage must be a str"),
    ]:
        recorder = Recorder()
        with pytest.raises(error, match=words) as caught:
            make(recorder, **kwargs)
        assert isinstance(caught.value, EmbcacheError)
        assert recorder.batches == [] and recorder.queries == []
    assert len(cache) == 0 and cache.storage == "bfloat16"


@pytest.fixture
def fake(tmp_path: Path) -> FakeSentenceTransformer:
    (tmp_path / "weights.bin").write_bytes(b"w")
    return FakeSentenceTransformer(str(tmp_path))


@pytest.mark.parametrize("storage", STORAGES)
def test_cached_embedder_passes_storage_through(
    fake: FakeSentenceTransformer, storage: str
) -> None:
    embedder = cached_embedder(fake, storage=storage, prompt="p: ")
    assert isinstance(embedder.cache, EmbeddingCache) and embedder.cache.storage == storage
    out = embedder.embed_sync(["a", "b"])
    np.testing.assert_array_equal(embedder.embed_sync(["a", "b"]), out)  # 3.0 is exact in all
    assert len(fake.encoded) == 1
    # the storage is part of no key: the same key as under float32, which the
    # model's precision (what encode computes) is not
    plain = cached_embedder(fake, prompt="p: ")
    assert embedder.key("a") == plain.key("a")
    assert embedder.key("a") != cached_embedder(fake, prompt="p: ", precision="int8").key("a")


def test_cached_embedder_checks_storage(fake: FakeSentenceTransformer) -> None:
    cache = EmbeddingCache(storage="int8")
    assert cached_embedder(fake, cache=cache).storage == "int8"
    with pytest.raises(ArgumentValueError, match="stores 'int8'"):
        cached_embedder(fake, cache=cache, storage="float16")
    with pytest.raises(ArgumentValueError, match="storage must be one of"):
        cached_embedder(fake, storage="float64")
    with pytest.raises(ArgumentTypeError, match="storage must be a str"):
        cached_embedder(fake, storage=["int8"])  # type: ignore[arg-type]
    assert fake.encoded == [] and len(cache.sync) == 0
