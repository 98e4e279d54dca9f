"""LlamaIndex adapter: an embcache in front of any LlamaIndex ``BaseEmbedding``.

Needs ``llama-index-core`` (from a clone, ``pip install ".[llamaindex]"``); ``import
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

from embcache.adapters.common import Embedders, EmbeddersView, as_lists, embedders
from embcache.embedder.caches import AnyCache
from embcache.errors import ArgumentTypeError
from embcache.identity import ModelIdentity

__all__ = ["CachedEmbedding"]

# the most texts BaseEmbedding.get_text_embedding_batch hands to one call of this
# adapter: the cache answers a whole call at once; the wrapped model batches
WHOLE_CALL = 2048


class CachedEmbedding(EmbeddersView, BaseEmbedding):
    """A LlamaIndex ``BaseEmbedding`` that caches another one's vectors in embcache.

    ``embed_model``: the BaseEmbedding to wrap. ``model_version``: a non-empty
    str or a ``ModelIdentity`` naming everything that changes its vectors; it
    goes into every key. ``cache``: an EmbeddingCache, SyncEmbeddingCache or
    SharedEmbeddingCache (default: a new ``EmbeddingCache()``). ``storage``: how that default cache
    holds its rows (None: ``"float32"``; ``"float16"``, ``"bfloat16"`` or
    ``"int8"``; vectors still come back as float32); a cache passed in keeps
    its own, and the storage is part of no key. ``timeout``: as CachedEmbedder's.
    ``name``: the label of its embedders in monitoring (embcache.metrics), as
    CachedEmbedder's.
    Other keyword arguments go to BaseEmbedding (``model_name`` defaults to the
    wrapped model's, ``embed_batch_size`` to 2048: a whole call is looked up
    at once, and the wrapped model still embeds in its own batches).

    Wrong types raise ArgumentTypeError (a TypeError); a wrong answer of the
    wrapped model (shape, NaN/inf) InvalidVectorError, and nothing of that call
    is cached.
    """

    embed_model: BaseEmbedding = Field(description="The wrapped embedding model.")
    model_version: str = Field(description="The model version in every cache key.")
    _embedders: Embedders = PrivateAttr()

    def __init__(
        self,
        embed_model: BaseEmbedding,
        model_version: str | ModelIdentity,
        *,
        cache: AnyCache | None = None,
        storage: str | None = None,
        timeout: float | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(embed_model, BaseEmbedding):
            raise ArgumentTypeError(
                "embed_model must be a llama_index BaseEmbedding, got " + type(embed_model).__name__
            )

        def documents(texts: list[str]) -> list[Embedding]:
            return embed_model.get_text_embedding_batch(texts)

        async def adocuments(texts: list[str]) -> list[Embedding]:
            return await embed_model.aget_text_embedding_batch(texts)

        parts = embedders(
            model_version,
            cache=cache,
            storage=storage,
            batch_size=WHOLE_CALL,
            timeout=timeout,
            documents=documents,
            adocuments=adocuments,
            query=embed_model.get_query_embedding,
            aquery=embed_model.aget_query_embedding,
            query_method="get_query_embedding",
            name=name,
        )
        kwargs.setdefault("model_name", embed_model.model_name)
        kwargs.setdefault("embed_batch_size", WHOLE_CALL)
        kwargs.update(embed_model=embed_model, model_version=parts.documents.model_version)
        super().__init__(**kwargs)
        self._embedders = parts

    @classmethod
    def class_name(cls) -> str:
        return "EmbcacheCachedEmbedding"

    # pydantic serves a private attribute (self._embedders) from BaseModel.__getattr__,
    # after the normal lookup has failed: ~2.4 us a read, as much as a whole cache
    # hit. The methods below read the documented store of private attributes,
    # ``__pydantic_private__``, directly (~0.07 us).

    def _parts(self) -> Embedders:
        return self.__pydantic_private__["_embedders"]  # type: ignore[index,no-any-return]

    def _get_query_embedding(self, query: str) -> Embedding:
        return as_lists(self._parts().queries.embed_one_sync(query))

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return as_lists(await self._parts().aqueries.embed_one(query))

    def _get_text_embedding(self, text: str) -> Embedding:
        return as_lists(self._parts().documents.embed_one_sync(text))

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return as_lists(await self._parts().adocuments.embed_one(text))

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return as_lists(self._parts().documents.embed_sync(texts))

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return as_lists(await self._parts().adocuments.embed(texts))
