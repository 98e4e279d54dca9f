# Typed surface of embcache.shared._segment (behaviour in _segment.pyx).
import os
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeAlias, final

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey
from embcache.core.info import CacheInfo

_Path: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

STORAGES: dict[str, int]
ENTRY_OVERHEAD_BYTES: int
SHM_DIR: str
MAX_DIM: int

def segment_path(name: str) -> str:
    """The file behind a segment `name` (/dev/shm/NAME, or a path holding a /)."""

def owner_alive(pid: int, start: int = 0) -> bool:
    """Whether process `pid` runs (a zombie does not) and, when `start` is given
    (the low 32 bits of its start time in clock ticks since boot), is the process
    that started then (a pid given again later is another process)."""

def boot_id() -> bytes:
    """The 16 bytes of the kernel's id for this boot of the machine."""

def sweep_stale_builds(folder: str, base: str) -> None:
    """Remove temporary files of segments `base` whose builder died unlinked."""

def open_segment(path: str) -> int:
    """Open an existing segment file, never through a symbolic link or a folder."""

@final
class SharedEmbeddingCache:
    """A cache of embedding vectors in a shared-memory segment for every process
    of the host that opens the same `name` (Linux)."""

    @property
    def path(self) -> str: ...
    def __init__(
        self,
        name: str,
        max_entries: int,
        ttl_seconds: float | None,
        max_memory_mb: float,
        *,
        dim: int,
        storage: str = "float32",
        mode: int = 0o600,
        label: str | None = None,
    ) -> None: ...
    @classmethod
    def attach(cls, name: str, *, label: str | None = None) -> SharedEmbeddingCache:
        """Attach to the existing segment `name` with whatever limits it has."""
    @staticmethod
    def unlink(name: str) -> bool:
        """Remove segment `name`'s file; True if it existed."""
    def close(self) -> None:
        """Unmap the segment; idempotent."""
    def __enter__(self) -> SharedEmbeddingCache: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...
    def put(self, key: CacheKey, vector: npt.ArrayLike) -> None:
        """Store `vector` under `key`."""
    def get(self, key: CacheKey) -> npt.NDArray[np.float32] | None:
        """The vector under `key`, or None."""
    def get_many(
        self, keys: Sequence[CacheKey], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """``(matrix, found)`` for `keys`; miss rows are zero."""
    def put_many(self, keys: Sequence[CacheKey], matrix: npt.ArrayLike) -> None:
        """Store row i of `matrix` under keys[i]."""
    def get_or_compute(
        self,
        keys: Sequence[CacheKey],
        compute: Callable[[list[CacheKey]], Any],
        *,
        timeout: float | None = None,
    ) -> npt.NDArray[np.float32]:
        """The (len(keys), dim) matrix for `keys`; `compute(missing_keys)` fills the
        misses, once per key across every attached process (single flight)."""
    def save(self, path: _Path) -> int:
        """Write every live entry to the snapshot file `path` (SyncEmbeddingCache's
        format); returns how many."""
    @classmethod
    def load(
        cls,
        path: _Path,
        name: str,
        max_entries: int = ...,
        ttl_seconds: float | None = ...,
        max_memory_mb: float = ...,
        *,
        storage: str = ...,
        mode: int = 0o600,
        label: str | None = None,
    ) -> SharedEmbeddingCache:
        """The segment `name` holding the snapshot file `path` (saved by either
        cache); a limit or storage not given is the recorded one; `label` as the
        constructor's."""
    def remove(self, key: CacheKey) -> bool:
        """Delete `key`; True if a live entry was removed."""
    def clear(self) -> None:
        """Remove every entry."""
    def get_cache_info(self) -> CacheInfo:
        """Size, bounds, exact memory use and statistics of the whole segment."""
    def verify(self) -> list[str]:
        """What is broken in the segment's invariants (empty when sound)."""
    @property
    def repairs(self) -> int: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def max_memory_mb(self) -> float: ...
    @property
    def ttl_seconds(self) -> float | None: ...
    @property
    def dim(self) -> int: ...
    @property
    def storage(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def stripes(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...
    @property
    def name(self) -> str:
        """The cache's label in monitoring (embcache.metrics); never part of a key."""
    def put_batch(
        self,
        keys: Sequence[CacheKey],
        matrix: npt.ArrayLike,
        *,
        what: str = "matrix",
        dim: int | None = None,
    ) -> SharedPutBatch:
        """A SharedPutBatch bound to this cache; keys, shape and dimension checked now."""
    def get_batch(
        self, keys: Sequence[CacheKey], out: npt.NDArray[np.float32] | None = None
    ) -> SharedGetBatch:
        """A SharedGetBatch bound to this cache; keys and `out` checked now."""
    @property
    def flights(self) -> Any:
        """This process's single-flight registry over the cache (made on first use)."""
    @property
    def policy(self) -> str:
        """The eviction policy: "clock"."""
    @property
    def closed(self) -> bool:
        """True once close() has unmapped the segment from this process."""

@final
class SharedPutBatch:
    """Rows to store under keys, checked by SharedEmbeddingCache.put_batch (the
    protocol of the core's PutBatch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Refused: made by SharedEmbeddingCache.put_batch."""

    @property
    def cache(self) -> SharedEmbeddingCache: ...
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
    def rows(self) -> npt.NDArray[np.float32]:
        """The private (n, dim) float32 copy, read-only; rows [0, taken) valid."""
    def take(self, start: int = 0, stop: int | None = None) -> None:
        """Check rows [start, stop) into the private copy, continuing from ``taken``."""
    def store(self, start: int = 0, stop: int | None = None) -> None:
        """Store taken rows [start, stop) into the batch's segment."""
    def __len__(self) -> int: ...

@final
class SharedGetBatch:
    """Keys to look up, checked by SharedEmbeddingCache.get_batch (the protocol
    of the core's GetBatch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Refused: made by SharedEmbeddingCache.get_batch."""

    @property
    def cache(self) -> SharedEmbeddingCache: ...
    @property
    def keys(self) -> tuple[CacheKey, ...]: ...
    @property
    def n(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def matrix(self) -> npt.NDArray[np.float32]: ...
    @property
    def found(self) -> npt.NDArray[np.bool_]: ...
    @property
    def read_count(self) -> int:
        """Keys looked up so far."""
    def read(self, start: int = 0, stop: int | None = None) -> None:
        """Look up keys [start, stop) into their rows, continuing from the last read."""
    def __len__(self) -> int: ...
