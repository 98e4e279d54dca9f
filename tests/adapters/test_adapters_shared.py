"""The framework adapters over a SharedEmbeddingCache: a LangChain
CachedEmbeddings or LlamaIndex CachedEmbedding in one process fills the
segment, and one in another process answers the same documents and queries
without calling its model; cached_embedder takes a shared cache too."""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from adapter_models import DIM, FakeSentenceTransformer, Recorder
from segment_names import segment_name  # noqa: F401 (a fixture)

from embcache import SharedEmbeddingCache

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

LIMITS = (1000, None, 4)
DOCS = ["alpha", "beta", "gamma", "alpha"]
QUERY = "what is beta?"


def langchain_round(name: str) -> tuple[list[list[str]], list[str], list[list[float]], list[float]]:
    """Documents and a query through a LangChain CachedEmbeddings over segment
    `name`; (model batches, model queries, document vectors, query vector)."""
    from langchain_core.embeddings import Embeddings

    from embcache.langchain import CachedEmbeddings

    recorder = Recorder()

    class Model(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return recorder.documents(texts)

        def embed_query(self, text: str) -> list[float]:
            return recorder.query(text)

    with SharedEmbeddingCache(name, *LIMITS, dim=DIM) as shared:
        embeddings = CachedEmbeddings(Model(), "fake-v1", cache=shared)
        docs = embeddings.embed_documents(DOCS)
        query = embeddings.embed_query(QUERY)
    return recorder.batches, recorder.queries, docs, query


def llamaindex_round(
    name: str,
) -> tuple[list[list[str]], list[str], list[list[float]], list[float]]:
    """The same through a LlamaIndex CachedEmbedding."""
    from llama_index.core.embeddings import BaseEmbedding

    from embcache.llamaindex import CachedEmbedding

    recorder = Recorder()

    class Model(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return recorder.query(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return recorder.query(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return recorder.documents([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return recorder.documents(texts)

    with SharedEmbeddingCache(name, *LIMITS, dim=DIM) as shared:
        cached = CachedEmbedding(Model(), "fake-v1", cache=shared)
        docs = cached.get_text_embedding_batch(DOCS)
        query = cached.get_query_embedding(QUERY)
    return recorder.batches, recorder.queries, docs, query


ROUNDS: dict[str, Any] = {"langchain": langchain_round, "llamaindex": llamaindex_round}
FRAMEWORKS = {"langchain": "langchain_core", "llamaindex": "llama_index.core"}


@pytest.mark.parametrize("framework", sorted(ROUNDS))
def test_a_second_process_answers_from_the_segment_without_its_model(
    segment_name: str,  # noqa: F811
    framework: str,
) -> None:
    pytest.importorskip(FRAMEWORKS[framework])
    ctx = mp.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        batches, queries, docs, query = pool.submit(ROUNDS[framework], segment_name).result(120)
    assert sorted(t for b in batches for t in b) == ["alpha", "beta", "gamma"]
    assert queries == [QUERY]
    batches2, queries2, docs2, query2 = ROUNDS[framework](segment_name)  # this process
    assert batches2 == [] and queries2 == []  # every vector from the other's work
    np.testing.assert_array_equal(np.float32(docs2), np.float32(docs))
    np.testing.assert_array_equal(np.float32(query2), np.float32(query))


def test_cached_embedder_takes_a_shared_cache(segment_name: str, tmp_path: Path) -> None:  # noqa: F811
    from embcache.sentence_transformers import cached_embedder

    (tmp_path / "weights.bin").write_bytes(b"w")
    first = FakeSentenceTransformer(str(tmp_path))
    second = FakeSentenceTransformer(str(tmp_path))
    with SharedEmbeddingCache(segment_name, *LIMITS, dim=first.dim) as shared:
        out = cached_embedder(first, cache=shared).embed_sync(["a", "b"])
        with SharedEmbeddingCache.attach(segment_name) as other:
            again = cached_embedder(second, cache=other).embed_sync(["b", "a"])
    assert len(first.encoded) == 1 and second.encoded == []
    np.testing.assert_array_equal(again, out[::-1])
