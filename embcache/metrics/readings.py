"""Reading every live cache, tier, embedder and single flight (at scrape time).

Each object registered itself with embcache.core.names when it was made; this
reads the counters they keep anyway (CacheInfo, TierInfo, EmbedderStats, the
single-flight waits), so nothing is counted on a cache's get or put for
monitoring. Objects sharing a name are added together: a name is one series.

A host-shared cache (SharedEmbeddingCache) is one series per name and segment:
its counts are the whole segment's (every process attached), so it is labelled
``segment`` (the segment's path) besides ``cache``, and handles of one process
on one segment are read once, never added together. Every process attached
reports the same segment-wide values: aggregate them across processes with
max, not sum.
"""

from __future__ import annotations

from typing import Any, Callable

from embcache.core.names import live
from embcache.metrics.table import LABELS

__all__ = ["Labels", "read", "read_one", "series"]

Reading = dict[str, float]
Labels = tuple[tuple[str, str], ...]
"""A series' labels in order: ``(("cache", name),)``, or with
``("segment", path)`` after it for a host-shared cache."""


def _cache(cache: Any) -> Reading:
    info = cache.get_cache_info()
    return {
        "hits": info.hits,
        "misses": info.misses,
        "puts": info.puts,
        "evictions": info.evictions,
        "expirations": info.expirations,
        "removals": info.removals,
        "admission_rejections": info.admission_rejections,
        "size": info.size,
        "max_entries": info.max_entries,
        "memory_usage_bytes": info.memory_usage_bytes,
        "allocated_bytes": info.allocated_bytes,
        "memory_budget_bytes": info.memory_budget_bytes,
    }


def _tier(tier: Any) -> Reading:
    info = tier.get_tier_info()
    return {
        "hits": info.hits,
        "misses": info.misses,
        "errors": info.errors,
        "breaker_open": 0 if info.breaker == "closed" else 1,
    }


def _embedder(embedder: Any) -> Reading:
    stats = embedder.stats
    return {
        "model_calls": stats.model_calls,
        "texts_embedded": stats.texts_embedded,
        "texts_from_cache": stats.texts_from_cache,
        "model_seconds": embedder.model_seconds,
    }


def _flights(flights: Any) -> Reading:
    return {"waits": flights.waits}


_READERS: dict[str, Callable[[Any], Reading]] = {
    "cache": _cache,
    "tier": _tier,
    "embedder": _embedder,
    "flights": _flights,
}


def read_one(obj: Any, kind: str) -> Reading:
    """The reading of one object of `kind` (field -> value)."""
    return _READERS[kind](obj)


def read(kind: str) -> dict[str, Reading]:
    """name -> reading of every live object of `kind`, same names added together
    (for caches, see ``series``, which also labels host-shared ones)."""
    readings: dict[str, Reading] = {}
    if kind == "flights":  # a cache whose single flight was never used waited for nothing
        readings = {cache.name: {"waits": 0} for cache in live("cache")}
    for obj in live(kind):
        reading = read_one(obj, kind)
        total = readings.get(obj.name)
        if total is None:
            readings[obj.name] = reading
        else:
            for field, value in reading.items():
                total[field] += value
    return readings


def _segment_of(obj: Any) -> str | None:
    """The segment path of a host-shared cache ("" once it is closed: nothing to
    read), else None."""
    from embcache.shared import SharedEmbeddingCache

    if not isinstance(obj, SharedEmbeddingCache):
        return None
    return "" if obj.closed else obj.path


def series(kind: str) -> dict[Labels, Reading]:
    """labels -> reading of every live object of `kind`: as ``read``, but a
    host-shared cache is its own series labelled with its segment, read once
    per segment (its counts are the segment's)."""
    label = LABELS[kind]
    if kind != "cache":
        return {((label, name),): reading for name, reading in read(kind).items()}
    readings: dict[Labels, Reading] = {}
    for obj in live(kind):
        segment = _segment_of(obj)
        if segment == "":  # a closed handle
            continue
        labels: Labels = ((label, obj.name),)
        if segment is not None:
            labels += (("segment", segment),)
            if labels not in readings:  # several handles: one segment, read once
                readings[labels] = read_one(obj, kind)
            continue
        reading = read_one(obj, kind)
        total = readings.get(labels)
        if total is None:
            readings[labels] = reading
        else:
            for field, value in reading.items():
                total[field] += value
    return readings
