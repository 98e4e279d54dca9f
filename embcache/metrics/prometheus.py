"""PrometheusCollector: every live cache, tier and embedder, read at scrape time.

Needs prometheus_client (``pip install ".[prometheus]" from a clone``)::

    from prometheus_client import REGISTRY
    from embcache.metrics import PrometheusCollector

    REGISTRY.register(PrometheusCollector())
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Union

from embcache.metrics.readings import series
from embcache.metrics.table import METRICS, Metric

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "embcache.metrics.PrometheusCollector needs prometheus_client: "
        'pip install prometheus_client (from a clone of embcache: pip install ".[prometheus]")'
    ) from exc

__all__ = ["PrometheusCollector"]

Family = Union[CounterMetricFamily, GaugeMetricFamily]


def _family(metric: Metric) -> Family:
    if metric.counter:
        return CounterMetricFamily(metric.prometheus, metric.help, labels=[metric.label])
    return GaugeMetricFamily(metric.prometheus, metric.help, labels=[metric.label])


class PrometheusCollector(Collector):
    """A prometheus_client collector of every live SyncEmbeddingCache (and so
    EmbeddingCache), RedisTier and CachedEmbedder: register one
    (``REGISTRY.register(PrometheusCollector())``) and each scrape reads their
    counters then (embcache.metrics.METRICS: names, types and labels). Objects
    are held weakly: a dropped cache disappears from the next scrape; objects
    sharing a name are one series (their values added). A SharedEmbeddingCache
    is labelled ``segment`` (its path) besides ``cache``, its values the whole
    segment's (see embcache.metrics.readings)."""

    def describe(self) -> list[Family]:
        """The families this collector reports (no samples): lets a registry
        refuse a second collector reporting the same names."""
        return [_family(metric) for metric in METRICS]

    def collect(self) -> Iterator[Family]:
        """One family per metric, a sample per live object's name (and segment,
        for a host-shared cache: its samples carry a ``segment`` label too)."""
        readings = {kind: series(kind) for kind in {m.kind for m in METRICS}}
        for metric in METRICS:
            family = _family(metric)
            for labels, reading in sorted(readings[metric.kind].items()):
                family.add_sample(metric.sample, dict(labels), reading[metric.field])
            yield family
