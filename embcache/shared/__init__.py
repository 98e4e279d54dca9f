"""The host-shared tier: SharedEmbeddingCache, one cache in a shared-memory
segment for every process of a host (Linux). The C segment is in
embcache/shared/segment.h and stripe.h; the Python surface in _segment.pyx."""

from embcache.shared._segment import ENTRY_OVERHEAD_BYTES, SharedEmbeddingCache, segment_path

__all__ = ["ENTRY_OVERHEAD_BYTES", "SharedEmbeddingCache", "segment_path"]
