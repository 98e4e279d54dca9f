"""LangChain adapter: an embcache in front of any LangChain ``Embeddings``.

Needs ``langchain-core`` (from a clone, ``pip install ".[langchain]"``); ``import
embcache`` never imports this module. With any LangChain ``Embeddings`` (the
README has a complete offline example over sentence-transformers)::

    from embcache.langchain import CachedEmbeddings

    embeddings = CachedEmbeddings(other_embeddings, "all-MiniLM-L6-v2")
    vectors = embeddings.embed_documents(texts)     # hits from the cache
    query = await embeddings.aembed_query("what is a frozenset?")

Each text is keyed by ``CacheKey.from_text(text, model_version)``; queries under
``model_version + "|query"``, because many models embed a query differently
from a document (an instruction prefix). Underneath are ``CachedEmbedder``s over
one cache, so a call's duplicate texts are embedded once, its misses go to the
wrapped model in batches (``embed_documents`` of the distinct misses), and
concurrent calls for the same texts - sync or async, any thread - embed them once.
Vectors are stored as float32: a text gives the same floats whether it was a hit
or a miss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from langchain_core.embeddings import Embeddings

from embcache._core import SyncEmbeddingCache
from embcache.adapters.common import QUERY_SUFFIX, sum_stats
from embcache.embedder.embedder import CachedEmbedder, EmbedderStats
from embcache.errors import ArgumentTypeError
from embcache.facade.cache import EmbeddingCache
from embcache.flight.timeouts import loop_error
from embcache.identity import ModelIdentity

__all__ = ["QUERY_SUFFIX", "CachedEmbeddings"]


class CachedEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` that caches another one's vectors in embcache.

    ``embeddings``: the LangChain ``Embeddings`` to wrap. ``model_version``: a
    non-empty str or a ``ModelIdentity`` naming everything that changes its
    vectors (``embcache.identity``); it goes into every key, so two models or
    configurations never share an entry. ``cache``: an EmbeddingCache or
    SyncEmbeddingCache (default: a new ``EmbeddingCache()``: 100,000 entries,
    512 MiB, no expiry); it may be shared with other embedders and adapters.
    ``batch_size``: the most texts sent to ``embed_documents`` at once.
    ``timeout``: as CachedEmbedder's (seconds > 0 or None).

    ``embed_documents`` / ``aembed_documents`` call the wrapped model's
    ``embed_documents`` / ``aembed_documents`` with the distinct misses;
    ``embed_query`` / ``aembed_query`` its ``embed_query`` / ``aembed_query``.
    Wrong types raise ArgumentTypeError (a TypeError); a wrong answer of the
    wrapped model (shape, NaN/inf, a dimension other than a ModelIdentity's
    ``dim``) InvalidVectorError, and nothing of that call is cached. A sync
    method called on an event loop's thread while a task of that loop embeds
    the same texts raises RuntimeError (waiting would block the loop forever):
    await the async method there instead.
    """

    def __init__(
        self,
        embeddings: Embeddings,
        model_version: str | ModelIdentity,
        *,
        cache: EmbeddingCache | SyncEmbeddingCache | None = None,
        batch_size: int = 256,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(embeddings, Embeddings):
            raise ArgumentTypeError(
                "embeddings must be a langchain_core.embeddings.Embeddings, got "
                + type(embeddings).__name__
            )
        if model_version is None:
            raise ArgumentTypeError("model_version must be a str or a ModelIdentity, got None")
        if cache is None:
            cache = EmbeddingCache()
        self._embeddings = embeddings
        documents = CachedEmbedder(
            embeddings.embed_documents,
            model_version,
            cache=cache,
            batch_size=batch_size,
            timeout=timeout,
        )
        version = documents.model_version
        self._documents = documents
        self._adocuments = CachedEmbedder(
            embeddings.aembed_documents,
            model_version,  # a ModelIdentity's dim is checked here too
            cache=cache,
            batch_size=batch_size,
            timeout=timeout,
        )

        identity = documents.identity

        def checked(rows: list[list[float]], what: str) -> list[list[float]]:
            # query keys carry a plain str version: the identity's dim is checked here
            if identity is not None:
                for row in rows:
                    if hasattr(row, "__len__"):  # else the cache rejects it, saying why
                        identity.check_dim(len(row), what)
            return rows

        def queries(texts: list[str]) -> list[list[float]]:
            return checked([embeddings.embed_query(t) for t in texts], "embed_query's vector")

        async def aqueries(texts: list[str]) -> list[list[float]]:
            rows = [await embeddings.aembed_query(t) for t in texts]
            return checked(rows, "aembed_query's vector")

        self._queries = CachedEmbedder(
            queries, version + QUERY_SUFFIX, cache=cache, batch_size=batch_size, timeout=timeout
        )
        self._aqueries = CachedEmbedder(
            aqueries, version + QUERY_SUFFIX, cache=cache, batch_size=batch_size, timeout=timeout
        )

    @property
    def embeddings(self) -> Embeddings:
        """The wrapped LangChain Embeddings."""
        return self._embeddings

    @property
    def model_version(self) -> str:
        """The model version of document keys (queries: this + QUERY_SUFFIX)."""
        return self._documents.model_version

    @property
    def cache(self) -> EmbeddingCache | SyncEmbeddingCache:
        """The cache the vectors live in."""
        return self._documents.cache

    @property
    def document_embedder(self) -> CachedEmbedder:
        """The CachedEmbedder behind ``embed_documents`` (its ``key(text)`` is a
        document's cache key)."""
        return self._documents

    @property
    def query_embedder(self) -> CachedEmbedder:
        """The CachedEmbedder behind ``embed_query``."""
        return self._queries

    @property
    def stats(self) -> EmbedderStats:
        """What this adapter requested, served and saved, documents and queries,
        sync and async together."""
        return sum_stats(
            [e.stats for e in (self._documents, self._adocuments, self._queries, self._aqueries)]
        )

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """The vectors of `texts` in order (hits from the cache, the distinct misses
        from the wrapped model's ``embed_documents`` in batches)."""
        with _await_instead("embed_documents", "aembed_documents"):
            result: Any = self._documents.embed_sync(texts).tolist()
        return result  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query (cached under the query model version)."""
        with _await_instead("embed_query", "aembed_query"):
            result: Any = self._queries.embed_one_sync(text).tolist()
        return result  # type: ignore[no-any-return]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """``embed_documents`` on the event loop (the wrapped ``aembed_documents``)."""
        matrix = await self._adocuments.embed(texts)
        result: Any = matrix.tolist()
        return result  # type: ignore[no-any-return]

    async def aembed_query(self, text: str) -> list[float]:
        """``embed_query`` on the event loop (the wrapped ``aembed_query``)."""
        row = await self._aqueries.embed_one(text)
        result: Any = row.tolist()
        return result  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"CachedEmbeddings({self._embeddings!r}, {self.model_version!r})"


@contextlib.contextmanager
def _await_instead(method: str, async_method: str) -> Iterator[None]:
    """Say single flight's refusal to block an event loop in LangChain's words:
    the texts are being embedded by a task of the loop running in this thread,
    so the sync `method` must not wait; `async_method` awaited there would."""
    try:
        yield
    except RuntimeError as exc:
        if exc.args != loop_error().args:
            raise
        raise RuntimeError(
            f"CachedEmbeddings.{method} would deadlock: the texts it waits for are being "
            "embedded by an asyncio task of the event loop running in this thread (an "
            f"{async_method} call, or another embedder sharing the cache), which cannot run "
            f"while this thread waits; use 'await embeddings.{async_method}(...)' in that "
            "loop instead"
        ) from None
