"""What the layers above a core (single flight, the asyncio facade, the tier's
read-through, CachedEmbedder and the adapters) use of it: ``CoreCache``, a
typing Protocol that both SyncEmbeddingCache (in-process) and
SharedEmbeddingCache (one segment for every process of a host) satisfy, with
the batch objects their ``put_batch`` / ``get_batch`` return (``PutRows``,
``GetRows``). Code above the core is typed against these, so each operation
is written once for both kinds of cache.

Nothing here runs: it imports only typing (and numpy's types).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Protocol, Union, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from embcache._core import CacheKey
    from embcache.core.info import CacheInfo

__all__ = ["CoreCache", "GetRows", "PutRows", "Saving"]

Matrix = npt.NDArray[np.float32]
Found = npt.NDArray[np.bool_]
PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class PutRows(Protocol):
    """A checked batch of rows bound to its cache (the core's PutBatch, a
    segment's SharedPutBatch): ``take`` checks values into a private copy,
    ``store`` stores taken rows."""

    @property
    def cache(self) -> CoreCache: ...
    @property
    def keys(self) -> tuple[CacheKey, ...]: ...
    @property
    def n(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def taken(self) -> int: ...
    @property
    def what(self) -> str: ...
    @property
    def rows(self) -> Matrix: ...
    def take(self, start: int = 0, stop: int | None = None) -> None: ...
    def store(self, start: int = 0, stop: int | None = None) -> None: ...
    def __len__(self) -> int: ...


class GetRows(Protocol):
    """A checked lookup bound to its cache (GetBatch, SharedGetBatch): ``read``
    looks keys up into ``matrix`` and ``found``, in slices."""

    @property
    def keys(self) -> tuple[CacheKey, ...]: ...
    @property
    def n(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def matrix(self) -> Matrix: ...
    @property
    def found(self) -> Found: ...
    @property
    def read_count(self) -> int: ...
    def read(self, start: int = 0, stop: int | None = None) -> None: ...
    def __len__(self) -> int: ...


class CoreCache(Protocol):
    """A synchronous cache the package's upper layers drive: SyncEmbeddingCache
    or SharedEmbeddingCache (their own docstrings say what each call does)."""

    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> int | None: ...
    @property
    def storage(self) -> str: ...
    @property
    def policy(self) -> str: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def flights(self) -> Any: ...
    def put(self, key: CacheKey, vector: npt.ArrayLike) -> None: ...
    def get(self, key: CacheKey) -> Matrix | None: ...
    def get_many(
        self, keys: Sequence[CacheKey], out: Matrix | None = None
    ) -> tuple[Matrix, Found]: ...
    def put_many(self, keys: Sequence[CacheKey], matrix: npt.ArrayLike) -> None: ...
    def put_batch(
        self,
        keys: Sequence[CacheKey],
        matrix: npt.ArrayLike,
        *,
        what: str = "matrix",
        dim: int | None = None,
    ) -> PutRows: ...
    def get_batch(self, keys: Sequence[CacheKey], out: Matrix | None = None) -> GetRows: ...
    def get_or_compute(
        self,
        keys: Sequence[CacheKey],
        compute: Callable[[list[CacheKey]], Any],
        *,
        timeout: float | None = None,
    ) -> Matrix: ...
    def remove(self, key: CacheKey) -> bool: ...
    def clear(self) -> None: ...
    def get_cache_info(self) -> CacheInfo: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...


@runtime_checkable
class Saving(Protocol):
    """A cache that writes snapshots (SyncEmbeddingCache.save)."""

    def save(self, path: PathLike) -> int: ...
