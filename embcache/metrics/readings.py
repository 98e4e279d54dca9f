"""Reading every live cache, tier, embedder and single flight (at scrape time).

Each object registered itself with embcache.core.names when it was made; this
reads the counters they keep anyway (CacheInfo, TierInfo, EmbedderStats, the
single-flight waits), so nothing is counted on a cache's get or put for
monitoring. Objects sharing a name are added together: a name is one series.
"""

from __future__ import annotations

from typing import Any, Callable

from embcache.core.names import live

__all__ = ["read", "read_one"]

Reading = dict[str, float]


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
    """name -> reading of every live object of `kind`, same names added together."""
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
