"""embcache: an in-process cache for embedding vectors.

>>> from embcache import SyncEmbeddingCache, CacheKey
>>> cache = SyncEmbeddingCache(max_entries=10_000, ttl_seconds=3600, max_memory_mb=64)
>>> key = CacheKey.from_text("hello world", "nomic-embed-text-v1.5")
>>> cache.put(key, [0.1, 0.2, 0.3])
>>> cache.get(key)
array([0.1, 0.2, 0.3], dtype=float32)
"""

import importlib.util as _util
import logging as _logging
import os as _os

# the library logs on "embcache" (tier faults, failed periodic saves) and prints
# nothing itself: what reaches the user is up to the application's logging setup
_logging.getLogger("embcache").addHandler(_logging.NullHandler())

if _util.find_spec("embcache._core") is None:  # a clear error, naming the fix
    _here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.exists(_os.path.join(_here, "_core.pyx")):
        # the usual cause: running from the root of a clone (`python -m pytest`,
        # `python -m embcache` put the current folder first on sys.path)
        raise ImportError(
            f"embcache._core is not built: {_here} is embcache's source tree, imported "
            "because the current folder comes first on sys.path. Run from outside the "
            "source tree to use the installed embcache (pip install .), or build it in "
            "place: pip install -e . (or: pip install Cython numpy setuptools && "
            "python setup.py build_ext --inplace)"
        )
    raise ImportError(
        f"embcache._core is missing from {_here}: the installation is incomplete; "
        "reinstall embcache"
    )

from embcache._core import (  # noqa: E402
    ENTRY_OVERHEAD_BYTES,
    CacheKey,
    GetBatch,
    PutBatch,
    SyncEmbeddingCache,
)
from embcache.core.info import CacheInfo  # noqa: E402
from embcache.embedder.embedder import CachedEmbedder, EmbedderStats  # noqa: E402
from embcache.errors import (  # noqa: E402
    ArgumentTypeError,
    ArgumentValueError,
    CallContextError,
    DimensionMismatchError,
    EmbcacheError,
    EntryTooLargeError,
    FlightTimeoutError,
    InvalidKeyError,
    InvalidVectorError,
    KeyTypeError,
    RedisTierError,
    SharedSegmentError,
    SnapshotError,
    SnapshotFolderError,
    VectorTypeError,
)
from embcache.facade.cache import EmbeddingCache  # noqa: E402
from embcache.shared import SharedEmbeddingCache  # noqa: E402

del _util, _os, _logging

__version__ = "0.1.0"

__all__ = [
    "ArgumentTypeError",
    "ArgumentValueError",
    "CacheInfo",
    "CallContextError",
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
    "RedisTierError",
    "SharedEmbeddingCache",
    "SharedSegmentError",
    "SnapshotError",
    "SnapshotFolderError",
    "SyncEmbeddingCache",
    "VectorTypeError",
    "__version__",
]
