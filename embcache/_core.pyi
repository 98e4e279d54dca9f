"""Typed surface of the Cython core (embcache._core)."""

from collections.abc import Sequence
from typing import Callable, final

import numpy as np
import numpy.typing as npt

from embcache._info import CacheInfo

ENTRY_OVERHEAD_BYTES: int
"""Metadata bytes accounted to each entry beyond its ``dim * 4`` payload."""

def hash_key() -> bytes:
    """The 16-byte SipHash key this process uses for key fingerprints."""

def _siphash24(key: bytes, data: bytes, out128: bool = False) -> bytes: ...

@final
class CacheKey:
    """Immutable, hashable identity of one embedding: which content, which model,
    which chunk. ``None`` and ``""`` are different ``chunk_id`` values."""

    @property
    def content_hash(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def chunk_id(self) -> str | None: ...
    def __init__(self, content_hash: str, model_version: str, chunk_id: str | None = None) -> None:
        """TypeError for a field of the wrong type; ValueError for an empty
        content_hash or model_version."""
    @classmethod
    def from_text(cls, text: str, model_version: str, chunk_id: str | None = None) -> CacheKey:
        """Key whose content_hash is the SHA-256 hex digest of `text` in UTF-8."""
    def _fingerprint(self) -> tuple[int, int]: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __reduce__(self) -> tuple[type, tuple[str, str, str | None]]: ...

@final
class PutBatch:
    """A put_many batch checked by SyncEmbeddingCache._prepare_batch (opaque)."""

    @property
    def n(self) -> int: ...
    @property
    def checked(self) -> int: ...

@final
class SyncEmbeddingCache:
    """Thread-safe, synchronous embedding cache (the core behind EmbeddingCache)."""

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl_seconds: float | None = None,
        max_memory_mb: float = 512.0,
        *,
        dim: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """max_entries: int >= 1; ttl_seconds: > 0 or None (never expire);
        max_memory_mb: > 0; dim: int >= 1 fixes the dimension and preallocates the
        slab; clock: zero-argument callable returning monotonic seconds."""
    def put(self, key: CacheKey, vector: npt.ArrayLike) -> None:
        """Store a float32 copy of `vector` (1-D, real, finite, non-empty)."""
    def get(self, key: CacheKey) -> npt.NDArray[np.float32] | None:
        """A new float32 array of shape (dim,) owned by the caller, or None."""
    def get_many(
        self, keys: Sequence[CacheKey], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """``(matrix, found)``: a C-contiguous float32 (len(keys), dim) matrix whose
        miss rows are zero, and a bool (len(keys),) array. With `out`, rows are
        written there and `out` is returned. Mixed dimensions -> ValueError."""
    def put_many(self, keys: Sequence[CacheKey], matrix: npt.ArrayLike) -> None:
        """Store row i of `matrix` under keys[i]; validated whole before storing."""
    def get_or_compute(
        self,
        keys: Sequence[CacheKey],
        compute: Callable[[list[CacheKey]], npt.ArrayLike],
    ) -> npt.NDArray[np.float32]:
        """The (len(keys), dim) matrix for `keys`; `compute(missing_keys)` fills the
        misses (called at most once, single flight across threads)."""
    def _prepare_batch(self, keys: Sequence[CacheKey], matrix: npt.ArrayLike) -> PutBatch: ...
    def _check_batch(self, batch: PutBatch, start: int, stop: int) -> None: ...
    def _store_batch(self, batch: PutBatch, start: int, stop: int) -> None: ...
    def _live_dim(self, keys: Sequence[CacheKey]) -> int: ...
    def _check_out(self, out: object, n: int) -> int: ...
    def _as_keys(self, keys: Sequence[CacheKey]) -> tuple[CacheKey, ...]: ...
    def remove(self, key: CacheKey) -> bool:
        """Delete `key`; True if a live entry was removed."""
    def clear(self) -> None:
        """Remove every entry; statistics are kept."""
    def get_cache_info(self) -> CacheInfo:
        """A consistent snapshot of size, bounds, memory and statistics."""
    @property
    def max_entries(self) -> int: ...
    @property
    def max_memory_mb(self) -> float: ...
    @property
    def ttl_seconds(self) -> float | None: ...
    @property
    def dim(self) -> int | None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def _check_invariants(self) -> None:
        """Raise AssertionError if any internal invariant is broken (tests, debugging)."""
