"""What the framework adapters (embcache.langchain, embcache.llamaindex) share;
imports no framework."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from embcache.core.names import check_name
from embcache.embedder.caches import AnyCache, cache_for
from embcache.embedder.embedder import CachedEmbedder, EmbedderStats, EmbedFn
from embcache.errors import ArgumentTypeError
from embcache.identity import ModelIdentity

__all__ = ["QUERY_SUFFIX", "Embedders", "EmbeddersView", "as_lists", "embedders", "sum_stats"]

QUERY_SUFFIX = "|query"
"""Appended to the model version of query keys: many models embed a query
differently from a document (an instruction prefix), so the two never share an
entry."""

Vector = Sequence[float]


def sum_stats(parts: list[EmbedderStats]) -> EmbedderStats:
    """The field-by-field sum of `parts` (an adapter's embedders together)."""
    return EmbedderStats(
        texts_requested=sum(s.texts_requested for s in parts),
        texts_from_cache=sum(s.texts_from_cache for s in parts),
        texts_embedded=sum(s.texts_embedded for s in parts),
        model_calls=sum(s.model_calls for s in parts),
        model_calls_saved=sum(s.model_calls_saved for s in parts),
    )


def as_lists(array: npt.NDArray[np.float32]) -> list[Any]:
    """`array` as the frameworks take it: a vector as a list of floats, a matrix
    as a list of them."""
    return array.tolist()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Embedders:
    """An adapter's four CachedEmbedders over one cache: documents and queries,
    each sync and async (the async ones call the wrapped model's async methods)."""

    documents: CachedEmbedder
    adocuments: CachedEmbedder
    queries: CachedEmbedder
    aqueries: CachedEmbedder

    @property
    def stats(self) -> EmbedderStats:
        """The four embedders' stats together."""
        return sum_stats(
            [e.stats for e in (self.documents, self.adocuments, self.queries, self.aqueries)]
        )


class EmbeddersView:
    """What an adapter shows of its Embedders (kept in ``self._embedders``)."""

    _embedders: Embedders

    @property
    def cache(self) -> AnyCache:
        """The cache the vectors live in."""
        return self._embedders.documents.cache

    @property
    def name(self) -> str:
        """The label of this adapter's embedders in monitoring (embcache.metrics:
        the four are reported together under it); never part of a key."""
        return self._embedders.documents.name

    @property
    def document_embedder(self) -> CachedEmbedder:
        """The CachedEmbedder behind document (text) embeddings: its ``key(text)``
        is a document's cache key."""
        return self._embedders.documents

    @property
    def query_embedder(self) -> CachedEmbedder:
        """The CachedEmbedder behind query embeddings (keys under the model
        version + QUERY_SUFFIX)."""
        return self._embedders.queries

    @property
    def stats(self) -> EmbedderStats:
        """What this adapter requested, served and saved, documents and queries,
        sync and async together."""
        return self._embedders.stats


def embedders(
    model_version: str | ModelIdentity,
    *,
    cache: AnyCache | None,
    storage: str | None,
    batch_size: int,
    timeout: float | None,
    documents: EmbedFn,
    adocuments: EmbedFn,
    query: Callable[[str], Vector],
    aquery: Callable[[str], Awaitable[Vector]],
    query_method: str,
    name: str | None = None,
) -> Embedders:
    """The Embedders of an adapter: `documents` / `adocuments` embed a list of
    texts, keyed under `model_version`; `query` / `aquery` (the wrapped model's
    method `query_method` and its ``"a"``-prefixed twin) one query, keyed under
    the model version + QUERY_SUFFIX. `cache` None: a new
    ``EmbeddingCache(storage=storage)``; `storage`, `batch_size` and `timeout`
    as CachedEmbedder's (a cache passed in keeps its own storage); `name`
    (CachedEmbedder's; None: one generated name) names all four, so monitoring
    reports them as one.

    ArgumentTypeError for a None `model_version`; CachedEmbedder's errors for
    the other arguments. A query vector whose dimension is not a ModelIdentity's
    ``dim`` raises DimensionMismatchError (its keys carry a plain str version,
    so the check is made here)."""
    named = check_name(name) if name is not None else None
    if model_version is None:
        raise ArgumentTypeError("model_version must be a str or a ModelIdentity, got None")
    shared = cache_for(cache, storage)
    named = named or check_name(None)

    def embedder(embed_fn: EmbedFn, version: str | ModelIdentity) -> CachedEmbedder:
        return CachedEmbedder(
            embed_fn, version, cache=shared, batch_size=batch_size, timeout=timeout, name=named
        )

    first = embedder(documents, model_version)
    identity = first.identity

    def checked(rows: list[Vector], what: str) -> list[Vector]:
        if identity is not None:
            for row in rows:
                if hasattr(row, "__len__"):  # else the cache rejects it, saying why
                    identity.check_dim(len(row), what)
        return rows

    def queries(texts: list[str]) -> list[Vector]:
        return checked([query(t) for t in texts], f"{query_method}'s vector")

    async def aqueries(texts: list[str]) -> list[Vector]:
        return checked([await aquery(t) for t in texts], f"a{query_method}'s vector")

    query_version = first.model_version + QUERY_SUFFIX
    return Embedders(
        documents=first,
        adocuments=embedder(adocuments, model_version),  # a ModelIdentity's dim checked too
        queries=embedder(queries, query_version),
        aqueries=embedder(aqueries, query_version),
    )
