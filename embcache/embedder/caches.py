"""Which cache an embedder or adapter uses: the one it is given, or a default
EmbeddingCache storing its rows as ``storage`` says. The storage is how rows
are held, never part of a key: the same text under the same model version has
one key whatever a cache stores it as.
"""

from __future__ import annotations

from typing import Union

from embcache._core import SyncEmbeddingCache
from embcache.errors import ArgumentTypeError, ArgumentValueError
from embcache.facade.cache import EmbeddingCache
from embcache.shared import SharedEmbeddingCache

__all__ = ["STORAGES", "AnyCache", "cache_for"]

AnyCache = Union[EmbeddingCache, SyncEmbeddingCache, SharedEmbeddingCache]
"""A cache an embedder or adapter takes: the asyncio facade, an in-process
SyncEmbeddingCache, or a host-shared SharedEmbeddingCache."""

STORAGES = ("float32", "float16", "bfloat16", "int8")
"""The row storages a cache offers (``storage=`` of SyncEmbeddingCache / EmbeddingCache)."""


def cache_for(cache: AnyCache | None, storage: str | None) -> AnyCache:
    """`cache` when given (an EmbeddingCache, SyncEmbeddingCache or
    SharedEmbeddingCache; it keeps its own storage), else a new
    ``EmbeddingCache(storage=storage)`` (``storage`` None: ``"float32"``).

    ArgumentTypeError (a TypeError) for a `cache` of another type or a `storage`
    that is not a str or None; ArgumentValueError (a ValueError) for a storage
    that is not one of STORAGES, or one that differs from the given cache's
    (``storage=`` chooses the default cache's rows; a cache passed in was made
    with its own)."""
    if storage is not None:
        if not isinstance(storage, str):
            raise ArgumentTypeError(
                f"storage must be a str (one of {', '.join(STORAGES)}) or None, got "
                + type(storage).__name__
            )
        if storage not in STORAGES:
            raise ArgumentValueError(
                f"storage must be one of {', '.join(map(repr, STORAGES))}, got {storage!r}"
            )
    if cache is None:
        return EmbeddingCache(storage="float32" if storage is None else storage)
    if not isinstance(cache, (EmbeddingCache, SyncEmbeddingCache, SharedEmbeddingCache)):
        raise ArgumentTypeError(
            "cache must be an EmbeddingCache, a SyncEmbeddingCache or a SharedEmbeddingCache, "
            "got " + type(cache).__name__
        )
    if storage is not None and storage != cache.storage:
        raise ArgumentValueError(
            f"storage={storage!r} chooses the rows of the default cache, but the given cache "
            f"stores {cache.storage!r}: leave storage out, or make the cache with "
            f"storage={storage!r}"
        )
    return cache
