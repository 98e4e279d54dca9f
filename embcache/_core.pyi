"""Typed surface of the Cython core (embcache._core)."""

import os
import struct
from collections.abc import Sequence
from typing import Any, Callable, SupportsIndex, TypeAlias, final

import numpy as np
import numpy.typing as npt

from embcache.core.info import CacheInfo

ENTRY_OVERHEAD_BYTES: int
"""Metadata bytes accounted to each entry beyond its ``dim * 4`` payload."""

_Path: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

SNAPSHOT_MAGIC: bytes
"""The first 8 bytes of every snapshot file: ``b"EMBCSNAP"``."""
SNAPSHOT_VERSION: int
"""The snapshot format version this build writes (2); it also reads version 1."""
SNAPSHOT_BYTE_ORDER: int
"""The byte-order mark of the header (0x01020304, stored little-endian)."""
SNAPSHOT_DIGEST_SCHEME: int
"""1: entries are named by BLAKE2b-256 of the canonical key encoding."""
SNAPSHOT_CHECKSUM_SCHEME: int
"""1: sections are checksummed with mix64 v1."""
SNAPSHOT_HEADER: struct.Struct
"""The version-2 header's first 152 bytes; its mix64 checksum (seed 1) follows as a u64."""
SNAPSHOT_HEADER_V1: struct.Struct
"""The version-1 header's first 120 bytes; its mix64 checksum (seed 1) follows as a u64."""

def snapshot_checksum(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    """The snapshot checksum (mix64 v1) of `data` under `seed`."""

def hash_key() -> bytes:
    """The 16-byte secret key this process uses to place keys in the index."""

def key_hash(key: bytes, digest: bytes) -> int:
    """The index hash (unsigned 64-bit) of a 32-byte key `digest` under the 16-byte `key`."""

def blake2b(data: bytes, digest_size: int = 64, key: bytes = b"") -> bytes:
    """BLAKE2b (RFC 7693) of `data`: the implementation behind CacheKey.digest."""

def row_bytes(storage: str, dim: SupportsIndex) -> int:
    """Bytes one row of `dim` values takes in `storage`: 4 * dim for "float32",
    2 * dim for "float16" and "bfloat16", dim + 4 for "int8" (a float32 scale,
    then one int8 per value)."""

def encode_rows(matrix: npt.NDArray[np.float32], storage: str) -> npt.NDArray[np.uint8]:
    """The rows of a C-contiguous float32 (n, dim) `matrix` encoded for `storage`:
    a new uint8 (n, row_bytes(storage, dim)) array. InvalidVectorError naming the
    position and the storage for a value it cannot hold (NaN, infinity,
    |x| > 65504 for float16, a value that rounds to infinity for bfloat16)."""

def decode_rows(
    encoded: npt.NDArray[np.uint8],
    storage: str,
    dim: SupportsIndex,
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """Rows encoded by encode_rows for `storage` and `dim` decoded to float32
    (into `out`, a writable C-contiguous float32 (n, dim) array, when given).
    DimensionMismatchError for rows of another length; InvalidVectorError for a
    row that decodes to values that are not finite."""

def _codec_kernels(limit: str | None = None) -> str:
    """Tests only: the codec kernels in use ("portable", "avx2", "avx512"), after
    limiting them to no better than `limit` when given."""

def _force_portable_kernels(on: bool) -> bool:
    """Tests only: use the portable C codec kernels (True) or the CPU's fastest
    (False); returns the previous setting."""

def as_key_tuple(keys: object, caller: str) -> tuple[CacheKey, ...]:
    """`keys` as a tuple of CacheKey; KeyTypeError (naming `caller`) otherwise."""

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
    @property
    def digest(self) -> bytes:
        """32 bytes, BLAKE2b-256 of the canonical encoding; stable everywhere."""
    def __init__(self, content_hash: str, model_version: str, chunk_id: str | None = None) -> None:
        """KeyTypeError for a field of the wrong type; InvalidKeyError for an empty
        content_hash or model_version."""
    @classmethod
    def from_text(cls, text: str, model_version: str, chunk_id: str | None = None) -> CacheKey:
        """Key whose content_hash is the SHA-256 hex digest of `text` in UTF-8."""
    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __reduce__(self) -> tuple[type, tuple[str, str, str | None]]: ...

@final
class PutBatch:
    """Rows to store under keys, checked by SyncEmbeddingCache.put_batch and
    bound to that cache; ``take`` checks values into a private copy, ``store``
    stores taken rows."""

    @property
    def cache(self) -> SyncEmbeddingCache: ...
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
        """Store taken rows [start, stop) into the batch's cache."""
    def __len__(self) -> int: ...

@final
class GetBatch:
    """Keys to look up, checked by SyncEmbeddingCache.get_batch and bound to that
    cache; ``read`` looks keys up into ``matrix`` and ``found``."""

    @property
    def cache(self) -> SyncEmbeddingCache: ...
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
        policy: str = "lru",
        storage: str = "float32",
        name: str | None = None,
    ) -> None:
        """max_entries: int >= 1; ttl_seconds: > 0 or None (never expire);
        max_memory_mb: > 0; dim: int >= 1 fixes the dimension and preallocates the
        slab; clock: zero-argument callable returning monotonic seconds;
        policy: "lru" or "tinylfu" (W-TinyLFU admission); storage: "float32",
        "float16", "bfloat16" or "int8", how rows hold vectors (lookups return
        float32); name: a label for monitoring, 1 to 64 of ``A-Za-z0-9_.:-``
        (None: ``embcache-N``)."""
    @property
    def flights(self) -> Any:
        """The single-flight registry behind get_or_compute (made on first use;
        embcache.flight.registry.Flights)."""
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
        """Store row i of `matrix` under keys[i]; checked whole before storing."""
    def put_batch(
        self,
        keys: Sequence[CacheKey],
        matrix: npt.ArrayLike,
        *,
        what: str = "matrix",
        dim: int | None = None,
    ) -> PutBatch:
        """A PutBatch bound to this cache; keys, shape and dimension checked now."""
    def get_batch(
        self, keys: Sequence[CacheKey], out: npt.NDArray[np.float32] | None = None
    ) -> GetBatch:
        """A GetBatch bound to this cache; keys, `out` and dimension checked now."""
    def get_or_compute(
        self,
        keys: Sequence[CacheKey],
        compute: Callable[[list[CacheKey]], Any],
        *,
        timeout: float | None = None,
    ) -> npt.NDArray[np.float32]:
        """The (len(keys), dim) matrix for `keys`; `compute(missing_keys)` fills the
        misses (called at most once, single flight)."""
    def remove(self, key: CacheKey) -> bool:
        """Delete `key`; True if a live entry was removed."""
    def clear(self) -> None:
        """Remove every entry; statistics are kept."""
    def get_cache_info(self) -> CacheInfo:
        """A consistent snapshot of size, bounds, memory and statistics."""
    def save(self, path: _Path) -> int:
        """Write every live entry to the snapshot file `path` (atomically, with
        checksums; through a symbolic link to the file it names); returns how many
        were written. SnapshotFolderError when `path`'s folder is a file."""
    @classmethod
    def load(
        cls,
        path: _Path,
        *,
        max_entries: int = ...,
        ttl_seconds: float | None = ...,
        max_memory_mb: float = ...,
        dim: int | None = ...,
        clock: Callable[[], float] | None = None,
        policy: str = "lru",
        storage: str = ...,
        name: str | None = None,
    ) -> SyncEmbeddingCache:
        """A new cache holding the snapshot file `path`; a limit not given is the
        recorded one. `storage` not given is the snapshot's (rows restored byte for
        byte); another converts every vector (InvalidVectorError naming an entry
        the new storage cannot hold). SnapshotError for a malformed file,
        FileNotFoundError for a missing one."""
    @property
    def max_entries(self) -> int:
        """The bound on the number of entries."""
    @property
    def max_memory_mb(self) -> float:
        """The memory budget in MiB, as given."""
    @property
    def ttl_seconds(self) -> float | None:
        """Seconds an entry lives after its last write, or None."""
    @property
    def dim(self) -> int | None:
        """The fixed vector dimension, or None."""
    @property
    def policy(self) -> str:
        """The eviction policy: "lru" or "tinylfu"."""
    @property
    def name(self) -> str:
        """The cache's label in monitoring (embcache.metrics); never part of a key."""
    @property
    def storage(self) -> str:
        """How rows hold vectors: "float32", "float16", "bfloat16" or "int8"."""
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def _probe_lengths(self) -> tuple[float, int]:
        """(mean, longest) index cells a lookup of a live key visits (tests)."""
    def _check_invariants(self) -> None:
        """Raise AssertionError if any internal invariant is broken (tests, debugging)."""

MGET_MORE: int
"""MgetReader.feed: every byte was read; the reply goes on."""
MGET_DONE: int
"""MgetReader.feed: the reply was read to its end."""
MGET_REPLY_ERROR: int
"""MgetReader.feed: the reply is an error line (MgetReader.error_text)."""
MGET_PROTOCOL: int
"""MgetReader.feed: not a reply to MGET of that many keys."""

@final
class MgetReader:
    """Reads one RESP reply to ``MGET`` of `n` keys, fed in chunks, into float32
    rows of dimension `dim` (None: that of the first valid value), checking each
    value as embcache.tier.wire.decode_values does; with `out` (writable,
    C-contiguous, float32, (n, dim), zero-filled), value i goes to ``out[i]``."""

    def __init__(
        self, n: int, dim: int | None = None, out: npt.NDArray[np.float32] | None = None
    ) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Read the next chunk of the reply: MGET_MORE, MGET_DONE,
        MGET_REPLY_ERROR or MGET_PROTOCOL."""
    @property
    def done(self) -> bool:
        """True once the whole reply was read."""
    @property
    def extra(self) -> int:
        """Bytes of the last chunk fed that follow the reply."""
    @property
    def error_text(self) -> str:
        """The text of an error reply (its first 256 bytes), else ''."""
    @property
    def errors(self) -> int:
        """Values present but invalid so far."""
    @property
    def rows(self) -> npt.NDArray[np.float32]:
        """Valid values' rows in order (with `out`: `out`)."""
    @property
    def index(self) -> npt.NDArray[np.intp]:
        """Positions (ascending) of the valid values."""
