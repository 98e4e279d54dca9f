"""embcache: an in-process cache for embedding vectors.

>>> from embcache import SyncEmbeddingCache, CacheKey
>>> cache = SyncEmbeddingCache(max_entries=10_000, ttl_seconds=3600, max_memory_mb=64)
>>> key = CacheKey.from_text("hello world", "nomic-embed-text-v1.5")
>>> cache.put(key, [0.1, 0.2, 0.3])
>>> cache.get(key)
array([0.1, 0.2, 0.3], dtype=float32)
"""

# first: a clear error (naming the fix) when the compiled core is not built
import embcache._build_check  # noqa: F401  isort: skip

# first: attaches the single-flight registry to every cache the core creates
import embcache._flight  # noqa: F401  isort: skip
from embcache._async import EmbeddingCache
from embcache._core import ENTRY_OVERHEAD_BYTES, CacheKey, GetBatch, PutBatch, SyncEmbeddingCache
from embcache._embedder import CachedEmbedder, EmbedderStats
from embcache._flight import FlightTimeoutError
from embcache._info import CacheInfo
from embcache.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    DimensionMismatchError,
    EmbcacheError,
    EntryTooLargeError,
    InvalidKeyError,
    InvalidVectorError,
    KeyTypeError,
    SnapshotError,
    SnapshotFolderError,
    VectorTypeError,
)

__version__ = "0.1.0"

__all__ = [
    "ArgumentTypeError",
    "ArgumentValueError",
    "CacheInfo",
    "CacheKey",
    "CachedEmbedder",
    "DimensionMismatchError",
    "ENTRY_OVERHEAD_BYTES",
    "EmbcacheError",
    "EmbedderStats",
    "EmbeddingCache",
    "EntryTooLargeError",
    "FlightTimeoutError",
    "GetBatch",
    "InvalidKeyError",
    "InvalidVectorError",
    "KeyTypeError",
    "PutBatch",
    "SnapshotError",
    "SnapshotFolderError",
    "SyncEmbeddingCache",
    "VectorTypeError",
    "__version__",
]
