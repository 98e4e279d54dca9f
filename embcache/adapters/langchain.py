"""LangChain adapter: an embcache in front of any LangChain ``Embeddings``.

Needs ``langchain-core`` (from a clone, ``pip install ".[langchain]"``); ``import
embcache`` never imports this module. With any LangChain ``Embeddings`` (the
docs/frameworks.md has a complete offline example over sentence-transformers)::

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
Vectors are stored as float32 by default, or with a compact ``storage=``
(float16, bfloat16, int8) in that encoding, and come back as the cache holds
them (decoded to float32): a text gives the same floats whether it was a hit or
a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from langchain_core.embeddings import Embeddings

from embcache.adapters.common import QUERY_SUFFIX, EmbeddersView, as_lists, embedders
from embcache.embedder.caches import AnyCache
from embcache.errors import ArgumentTypeError, CallContextError
from embcache.identity import ModelIdentity

__all__ = ["QUERY_SUFFIX", "CachedEmbeddings"]


class CachedEmbeddings(EmbeddersView, Embeddings):
    """A LangChain ``Embeddings`` that caches another one's vectors in embcache.

    ``embeddings``: the LangChain ``Embeddings`` to wrap. ``model_version``: a
    non-empty str or a ``ModelIdentity`` naming everything that changes its
    vectors (``embcache.identity``); it goes into every key, so two models or
    configurations never share an entry. ``cache``: an EmbeddingCache,
    SyncEmbeddingCache or SharedEmbeddingCache (default: a new
    ``EmbeddingCache()``: 100,000 entries, 512 MiB, no expiry); it may be
    shared with other embedders and adapters.
    ``storage``: how that default cache holds its rows (None: ``"float32"``;
    ``"float16"``, ``"bfloat16"`` or ``"int8"`` hold 2x to 3.6x the vectors in
    the same memory; vectors still come back as float32); a cache passed in
    keeps its own. The storage is part of no key.
    ``batch_size``: the most texts sent to ``embed_documents`` at once.
    ``timeout``: as CachedEmbedder's (seconds > 0 or None). ``name``: the
    label of its embedders in monitoring (embcache.metrics), as CachedEmbedder's.

    ``embed_documents`` / ``aembed_documents`` call the wrapped model's
    ``embed_documents`` / ``aembed_documents`` with the distinct misses;
    ``embed_query`` / ``aembed_query`` its ``embed_query`` / ``aembed_query``.
    Wrong types raise ArgumentTypeError (a TypeError); a wrong answer of the
    wrapped model (shape, NaN/inf, a dimension other than a ModelIdentity's
    ``dim``) InvalidVectorError, and nothing of that call is cached. A sync
    method called on an event loop's thread while a task of that loop embeds
    the same texts raises CallContextError (a RuntimeError: waiting would block
    the loop forever): await the async method there instead.
    """

    def __init__(
        self,
        embeddings: Embeddings,
        model_version: str | ModelIdentity,
        *,
        cache: AnyCache | None = None,
        storage: str | None = None,
        batch_size: int = 256,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(embeddings, Embeddings):
            raise ArgumentTypeError(
                "embeddings must be a langchain_core.embeddings.Embeddings, got "
                + type(embeddings).__name__
            )
        self._embeddings = embeddings
        self._embedders = embedders(
            model_version,
            cache=cache,
            storage=storage,
            batch_size=batch_size,
            timeout=timeout,
            documents=embeddings.embed_documents,
            adocuments=embeddings.aembed_documents,
            query=embeddings.embed_query,
            aquery=embeddings.aembed_query,
            query_method="embed_query",
            name=name,
        )

    @property
    def embeddings(self) -> Embeddings:
        """The wrapped LangChain Embeddings."""
        return self._embeddings

    @property
    def model_version(self) -> str:
        """The model version of document keys (queries: this + QUERY_SUFFIX)."""
        return self._embedders.documents.model_version

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """The vectors of `texts` in order (hits from the cache, the distinct misses
        from the wrapped model's ``embed_documents`` in batches)."""
        with _await_instead("embed_documents", "aembed_documents"):
            return as_lists(self._embedders.documents.embed_sync(texts))

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query (cached under the query model version)."""
        with _await_instead("embed_query", "aembed_query"):
            return as_lists(self._embedders.queries.embed_one_sync(text))

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """``embed_documents`` on the event loop (the wrapped ``aembed_documents``)."""
        return as_lists(await self._embedders.adocuments.embed(texts))

    async def aembed_query(self, text: str) -> list[float]:
        """``embed_query`` on the event loop (the wrapped ``aembed_query``)."""
        return as_lists(await self._embedders.aqueries.embed_one(text))

    def __repr__(self) -> str:
        return f"CachedEmbeddings({self._embeddings!r}, {self.model_version!r})"


@contextlib.contextmanager
def _await_instead(method: str, async_method: str) -> Iterator[None]:
    """Say single flight's refusal to block an event loop in LangChain's words: a
    CallContextError while an event loop runs in this thread means the texts are
    being embedded by a task of that loop, so the sync `method` must not wait;
    `async_method` awaited there would."""
    try:
        yield
    except CallContextError:
        if not _loop_running():
            raise  # no loop here: another refusal, as it was
        raise CallContextError(
            f"CachedEmbeddings.{method} would deadlock: the texts it waits for are being "
            "embedded by an asyncio task of the event loop running in this thread (an "
            f"{async_method} call, or another embedder sharing the cache), which cannot run "
            f"while this thread waits; use 'await embeddings.{async_method}(...)' in that "
            "loop instead"
        ) from None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
