"""The metrics embcache exports: one table, read by the Prometheus collector and
the OpenTelemetry instruments alike (embcache.metrics)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LABELS", "METRICS", "Metric"]

LABELS = {"cache": "cache", "tier": "tier", "embedder": "embedder", "flights": "cache"}
"""The label (attribute) naming the object a value belongs to, per kind of object
(a cache's single flight is reported under its cache's name)."""


@dataclass(frozen=True)
class Metric:
    """One exported metric: its Prometheus family, its OpenTelemetry instrument,
    and what it reads."""

    prometheus: str
    """The Prometheus name (a counter's samples add ``_total``)."""
    counter: bool
    """True for a monotonic count, False for a level (a gauge)."""
    kind: str
    """The kind of object it reads (embcache.core.names.KINDS)."""
    field: str
    """The field of that object's reading (embcache.metrics.readings)."""
    otel: str
    """The OpenTelemetry instrument name."""
    unit: str
    """The OpenTelemetry unit (UCUM; ``{...}`` annotations for counts)."""
    help: str
    """What it measures (Prometheus HELP, OpenTelemetry description)."""

    @property
    def label(self) -> str:
        """The label naming the object: ``cache``, ``tier`` or ``embedder``."""
        return LABELS[self.kind]

    @property
    def sample(self) -> str:
        """The name of its samples in the Prometheus text format."""
        return self.prometheus + ("_total" if self.counter else "")


def _m(prom: str, counter: bool, kind: str, field: str, otel: str, unit: str, help: str) -> Metric:
    return Metric(prom, counter, kind, field, otel, unit, help)


METRICS: tuple[Metric, ...] = (
    # -- every cache (SyncEmbeddingCache, and so every EmbeddingCache): CacheInfo
    _m(
        "embcache_hits",
        True,
        "cache",
        "hits",
        "embcache.hits",
        "{hit}",
        "Lookups that found a live entry.",
    ),
    _m(
        "embcache_misses",
        True,
        "cache",
        "misses",
        "embcache.misses",
        "{miss}",
        "Lookups that found no live entry.",
    ),
    _m(
        "embcache_puts",
        True,
        "cache",
        "puts",
        "embcache.puts",
        "{put}",
        "Successful puts, overwrites included.",
    ),
    _m(
        "embcache_evictions",
        True,
        "cache",
        "evictions",
        "embcache.evictions",
        "{eviction}",
        "Live entries evicted to make room (the policy's victims).",
    ),
    _m(
        "embcache_expirations",
        True,
        "cache",
        "expirations",
        "embcache.expirations",
        "{expiration}",
        "Expired entries reclaimed (on lookup, on put, to make room, or when counts are read).",
    ),
    _m(
        "embcache_removals",
        True,
        "cache",
        "removals",
        "embcache.removals",
        "{removal}",
        "Live entries deleted by remove().",
    ),
    _m(
        "embcache_admission_rejections",
        True,
        "cache",
        "admission_rejections",
        "embcache.admission.rejections",
        "{rejection}",
        "W-TinyLFU candidates evicted for being accessed less than the entries they would "
        "displace (also counted as evictions; 0 under LRU).",
    ),
    _m("embcache_entries", False, "cache", "size", "embcache.entries", "{entry}", "Live entries."),
    _m(
        "embcache_max_entries",
        False,
        "cache",
        "max_entries",
        "embcache.entries.limit",
        "{entry}",
        "The bound on the number of entries.",
    ),
    _m(
        "embcache_memory_bytes",
        False,
        "cache",
        "memory_usage_bytes",
        "embcache.memory.usage",
        "By",
        "Memory accounted against the budget (rows, entry overhead, the policy's sketch).",
    ),
    _m(
        "embcache_allocated_bytes",
        False,
        "cache",
        "allocated_bytes",
        "embcache.memory.allocated",
        "By",
        "Bytes resident for the entry table, the index and the slab rows.",
    ),
    _m(
        "embcache_memory_budget_bytes",
        False,
        "cache",
        "memory_budget_bytes",
        "embcache.memory.limit",
        "By",
        "The memory budget (max_memory_mb in bytes).",
    ),
    # -- a cache's single flight
    _m(
        "embcache_flight_waits",
        True,
        "flights",
        "waits",
        "embcache.flight.waits",
        "{wait}",
        "Missed keys a caller waited for while another caller computed them.",
    ),
    # -- every shared tier (RedisTier): TierInfo
    _m(
        "embcache_tier_hits",
        True,
        "tier",
        "hits",
        "embcache.tier.hits",
        "{hit}",
        "Keys read from the tier and valid.",
    ),
    _m(
        "embcache_tier_misses",
        True,
        "tier",
        "misses",
        "embcache.tier.misses",
        "{miss}",
        "Keys asked of the tier and not answered (absent, invalid, failed or skipped).",
    ),
    _m(
        "embcache_tier_errors",
        True,
        "tier",
        "errors",
        "embcache.tier.errors",
        "{error}",
        "Failed calls to the tier's store plus values that failed validation.",
    ),
    _m(
        "embcache_tier_breaker_open",
        False,
        "tier",
        "breaker_open",
        "embcache.tier.breaker.open",
        "1",
        "1 while the tier's circuit breaker is open or half-open, else 0.",
    ),
    # -- every CachedEmbedder (and adapter): EmbedderStats, model_seconds
    _m(
        "embcache_model_calls",
        True,
        "embedder",
        "model_calls",
        "embcache.model.calls",
        "{call}",
        "Calls made to the embedding model.",
    ),
    _m(
        "embcache_model_texts",
        True,
        "embedder",
        "texts_embedded",
        "embcache.model.texts",
        "{text}",
        "Texts sent to the embedding model.",
    ),
    _m(
        "embcache_texts_from_cache",
        True,
        "embedder",
        "texts_from_cache",
        "embcache.texts.from_cache",
        "{text}",
        "Texts answered without the model (cache hits, repeats, texts being embedded).",
    ),
    _m(
        "embcache_model_seconds",
        True,
        "embedder",
        "model_seconds",
        "embcache.model.time",
        "s",
        "Wall-clock seconds spent in the embedding model's calls.",
    ),
)
"""Every metric, in the order they are reported."""
