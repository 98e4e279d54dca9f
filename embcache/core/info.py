"""CacheInfo: a snapshot of a cache's size, bounds, memory and statistics."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CacheInfo"]


@dataclass(frozen=True)
class CacheInfo:
    """A consistent snapshot, taken under the cache's lock.

    Memory accounting is exact: ``memory_usage_bytes`` is ``policy_bytes`` plus
    the sum over live entries of their row bytes (``dim * 4`` under ``storage``
    "float32", ``dim * 2`` under "float16" and "bfloat16", ``dim + 4`` under
    "int8") plus ``entry_overhead_bytes``, and never exceeds
    ``memory_budget_bytes`` (``max_memory_mb * 2**20``). ``allocated_bytes`` is
    what the cache actually holds for slabs and tables.
    """

    size: int
    """Live entries (expired ones are reclaimed before the snapshot)."""
    max_entries: int
    memory_usage_bytes: int
    memory_usage_mb: float
    """``memory_usage_bytes / 2**20``."""
    max_memory_mb: float
    hits: int
    misses: int
    hit_rate: float
    """``hits / (hits + misses)``; 0.0 before any lookup."""
    evictions: int
    """Live entries evicted to make room (the policy's victims)."""
    expirations: int
    """Expired entries reclaimed (on lookup, on put, or to make room)."""
    puts: int
    """Successful puts, overwrites included."""
    overwrites: int
    """Puts that replaced a live entry of the same key."""
    removals: int
    """Live entries deleted by ``remove``."""
    ttl_seconds: float | None
    dim: int | None
    """The fixed dimension, or None."""
    dims: tuple[int, ...]
    """Dimensions that have live entries."""
    entry_overhead_bytes: int
    """Metadata bytes accounted to each entry beyond its row bytes (the vector as
    its ``storage`` encodes it)."""
    memory_budget_bytes: int
    allocated_bytes: int
    """Bytes held resident for the entry table, the index and the slab rows (the
    pages the kernel has mapped in, huge pages whole). It exceeds
    ``memory_budget_bytes`` by at most a fixed overhead (docs/guide/ttl-memory.md,
    "Memory accounting")."""
    reserved_bytes: int
    """Address space reserved for slab rows (every row each dimension may need);
    the kernel maps it in only as rows are written."""
    policy: str
    """The eviction policy: ``"lru"`` or ``"tinylfu"`` (W-TinyLFU)."""
    admission_rejections: int
    """W-TinyLFU only: candidates (the admission window's oldest entry) evicted
    because they were accessed less often than the main-region entries they
    would have displaced; each is also counted in ``evictions``. 0 under LRU."""
    policy_bytes: int
    """Bytes the policy holds once per cache, counted in ``memory_usage_bytes``:
    the W-TinyLFU frequency sketch (docs/guide/policies.md); 0 under LRU."""
    storage: str
    """How rows hold vectors: ``"float32"``, ``"float16"``, ``"bfloat16"`` or
    ``"int8"`` (lookups return float32 whatever it is)."""
    tier_hits: int = 0
    """Keys the shared tier (``EmbeddingCache(..., tier=)``) answered; 0 without a
    tier, and always 0 from SyncEmbeddingCache, which has none."""
    tier_misses: int = 0
    """Keys asked of the tier and not answered (absent, invalid, or skipped
    while the tier is failing); 0 without a tier."""
    tier_errors: int = 0
    """Failed tier calls (timeouts included) plus values that failed validation;
    0 without a tier."""
