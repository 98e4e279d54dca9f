"""Monitoring: every live cache, tier and embedder as Prometheus or
OpenTelemetry metrics, read from the counters they keep anyway.

``PrometheusCollector`` (``pip install ".[prometheus]" from a clone``) is a
prometheus_client collector; ``instrument(meter_provider=None)``
(``pip install ".[opentelemetry]" from a clone``) registers OpenTelemetry observable
instruments. ``METRICS`` lists what both report (docs/operations/metrics.md
has the table). Objects are labelled by their ``name=`` (embcache.core.names);
nothing on a cache's get or put changes when metrics are collected.

Importing this package imports neither prometheus_client nor OpenTelemetry:
each is imported when its entry point is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embcache.metrics.table import METRICS, Metric

if TYPE_CHECKING:
    from embcache.metrics.otel import instrument
    from embcache.metrics.prometheus import PrometheusCollector

__all__ = ["METRICS", "Metric", "PrometheusCollector", "instrument"]


def __getattr__(name: str) -> Any:
    """The entry points, imported with their optional dependency on first use."""
    if name == "PrometheusCollector":
        from embcache.metrics.prometheus import PrometheusCollector

        return PrometheusCollector
    if name == "instrument":
        from embcache.metrics.otel import instrument

        return instrument
    raise AttributeError(f"module 'embcache.metrics' has no attribute {name!r}")
