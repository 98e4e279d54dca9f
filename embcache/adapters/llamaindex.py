"""LlamaIndex adapter: an embcache in front of any LlamaIndex ``BaseEmbedding``.

Needs ``llama-index-core`` (``pip install "embcache[llamaindex]"``); ``import
embcache`` never imports this module. ::

    from embcache.llamaindex import CachedEmbedding

    embed_model = CachedEmbedding(HuggingFaceEmbedding(...), "all-MiniLM-L6-v2")
    Settings.embed_model = embed_model      # or pass it to an index

LlamaIndex's own ``embeddings_cache`` keys by the raw text with no model; here
every text is keyed by ``CacheKey.from_text(text, model_version)`` (queries under
``model_version + "|query"``). Underneath are ``CachedEmbedder``s over one
cache: a call's duplicates are embedded once, its misses go to the wrapped
model's ``get_text_embedding_batch`` together (which batches them by the wrapped
model's ``embed_batch_size``), and concurrent calls for the same texts embed
them once.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from embcache._core import SyncEmbeddingCache
from embcache.adapters.common import QUERY_SUFFIX, sum_stats
from embcache.embedder.embedder import CachedEmbedder, EmbedderStats
from embcache.errors import ArgumentTypeError
from embcache.facade.cache import EmbeddingCache
from embcache.identity import ModelIdentity

__all__ = ["CachedEmbedding"]

# the most texts BaseEmbedding.get_text_embedding_batch hands to one call of this
# adapter: the cache answers a whole call at once; the wrapped model batches
WHOLE_CALL = 2048


class CachedEmbedding(BaseEmbedding):
    """A LlamaIndex ``BaseEmbedding`` that caches another one's vectors in embcache.

    ``embed_model``: the BaseEmbedding to wrap. ``model_version``: a non-empty
    str or a ``ModelIdentity`` naming everything that changes its vectors; it
    goes into every key. ``cache``: an EmbeddingCache or SyncEmbeddingCache
    (default: a new ``EmbeddingCache()``). ``timeout``: as CachedEmbedder's.
    Other keyword arguments go to BaseEmbedding (``model_name`` defaults to the
    wrapped model's, ``embed_batch_size`` to 2048: a whole call is looked up
    at once, and the wrapped model still embeds in its own batches).

    Wrong types raise ArgumentTypeError (a TypeError); a wrong answer of the
    wrapped model (shape, NaN/inf) InvalidVectorError, and nothing of that call
    is cached.
    """

    embed_model: BaseEmbedding = Field(description="The wrapped embedding model.")
    model_version: str = Field(description="The model version in every cache key.")
    _documents: CachedEmbedder = PrivateAttr()
    _adocuments: CachedEmbedder = PrivateAttr()
    _queries: CachedEmbedder = PrivateAttr()
    _aqueries: CachedEmbedder = PrivateAttr()

    def __init__(
        self,
        embed_model: BaseEmbedding,
        model_version: str | ModelIdentity,
        *,
        cache: EmbeddingCache | SyncEmbeddingCache | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(embed_model, BaseEmbedding):
            raise ArgumentTypeError(
                "embed_model must be a llama_index BaseEmbedding, got " + type(embed_model).__name__
            )
        if model_version is None:
            raise ArgumentTypeError("model_version must be a str or a ModelIdentity, got None")
        if cache is None:
            cache = EmbeddingCache()

        def documents(texts: list[str]) -> list[Embedding]:
            return embed_model.get_text_embedding_batch(texts)

        async def adocuments(texts: list[str]) -> list[Embedding]:
            return await embed_model.aget_text_embedding_batch(texts)

        first = CachedEmbedder(
            documents, model_version, cache=cache, batch_size=WHOLE_CALL, timeout=timeout
        )
        version = first.model_version
        identity = first.identity

        def checked(rows: list[Embedding], what: str) -> list[Embedding]:
            # query keys carry a plain str version: the identity's dim is checked here
            if identity is not None:
                for row in rows:
                    if hasattr(row, "__len__"):  # else the cache rejects it, saying why
                        identity.check_dim(len(row), what)
            return rows

        def queries(texts: list[str]) -> list[Embedding]:
            rows = [embed_model.get_query_embedding(t) for t in texts]
            return checked(rows, "get_query_embedding's vector")

        async def aqueries(texts: list[str]) -> list[Embedding]:
            rows = [await embed_model.aget_query_embedding(t) for t in texts]
            return checked(rows, "aget_query_embedding's vector")

        kwargs.setdefault("model_name", embed_model.model_name)
        kwargs.setdefault("embed_batch_size", WHOLE_CALL)
        kwargs.update(embed_model=embed_model, model_version=version)
        super().__init__(**kwargs)
        self._documents = first
        self._adocuments = CachedEmbedder(
            adocuments,
            model_version,  # a ModelIdentity's dim is checked here too
            cache=cache,
            batch_size=WHOLE_CALL,
            timeout=timeout,
        )
        self._queries = CachedEmbedder(
            queries, version + QUERY_SUFFIX, cache=cache, batch_size=WHOLE_CALL, timeout=timeout
        )
        self._aqueries = CachedEmbedder(
            aqueries, version + QUERY_SUFFIX, cache=cache, batch_size=WHOLE_CALL, timeout=timeout
        )

    @classmethod
    def class_name(cls) -> str:
        return "EmbcacheCachedEmbedding"

    @property
    def cache(self) -> EmbeddingCache | SyncEmbeddingCache:
        """The cache the vectors live in."""
        return self._documents.cache

    @property
    def document_embedder(self) -> CachedEmbedder:
        """The CachedEmbedder behind text embeddings (``key(text)`` is a text's key)."""
        return self._documents

    @property
    def query_embedder(self) -> CachedEmbedder:
        """The CachedEmbedder behind query embeddings."""
        return self._queries

    @property
    def stats(self) -> EmbedderStats:
        """What this adapter requested, served and saved, texts and queries, sync
        and async together."""
        return sum_stats(
            [e.stats for e in (self._documents, self._adocuments, self._queries, self._aqueries)]
        )

    # pydantic serves a private attribute (self._queries) from BaseModel.__getattr__,
    # after the normal lookup has failed: ~2.4 us a read, as much as a whole cache
    # hit. The methods below read the documented store of private attributes,
    # ``__pydantic_private__``, directly (~0.07 us).

    def _get_query_embedding(self, query: str) -> Embedding:
        queries: CachedEmbedder = self.__pydantic_private__["_queries"]  # type: ignore[index]
        result: Any = queries.embed_one_sync(query).tolist()
        return result  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        queries: CachedEmbedder = self.__pydantic_private__["_aqueries"]  # type: ignore[index]
        row = await queries.embed_one(query)
        result: Any = row.tolist()
        return result  # type: ignore[no-any-return]

    def _get_text_embedding(self, text: str) -> Embedding:
        documents: CachedEmbedder = self.__pydantic_private__["_documents"]  # type: ignore[index]
        result: Any = documents.embed_one_sync(text).tolist()
        return result  # type: ignore[no-any-return]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        documents: CachedEmbedder = self.__pydantic_private__["_adocuments"]  # type: ignore[index]
        row = await documents.embed_one(text)
        result: Any = row.tolist()
        return result  # type: ignore[no-any-return]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        documents: CachedEmbedder = self.__pydantic_private__["_documents"]  # type: ignore[index]
        result: Any = documents.embed_sync(texts).tolist()
        return result  # type: ignore[no-any-return]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        documents: CachedEmbedder = self.__pydantic_private__["_adocuments"]  # type: ignore[index]
        matrix = await documents.embed(texts)
        result: Any = matrix.tolist()
        return result  # type: ignore[no-any-return]
