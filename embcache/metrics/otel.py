"""instrument(): embcache's metrics as OpenTelemetry observable instruments.

Needs the OpenTelemetry API (``pip install ".[opentelemetry]" from a clone``, which
also installs the SDK)::

    from embcache.metrics import instrument

    instrument()                     # the global MeterProvider, or:
    instrument(meter_provider=provider)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from embcache.metrics.readings import series
from embcache.metrics.table import METRICS, Metric

try:
    from opentelemetry.metrics import (
        CallbackOptions,
        MeterProvider,
        Observation,
        get_meter,
    )
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "embcache.metrics.instrument needs OpenTelemetry: pip install opentelemetry-sdk "
        '(from a clone of embcache: pip install ".[opentelemetry]")'
    ) from exc

__all__ = ["METER_NAME", "instrument"]

METER_NAME = "embcache"
"""The instrumentation scope of every instrument."""

Callback = Callable[[CallbackOptions], Iterable[Observation]]


def _callback(metric: Metric) -> Callback:
    """The observation callback of `metric`: one value per live object's name
    (and segment: a host-shared cache has the attribute ``segment`` too), read
    when the SDK collects."""
    kind, field = metric.kind, metric.field

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(reading[field], dict(labels))
            for labels, reading in sorted(series(kind).items())
        ]

    return observe


def instrument(meter_provider: MeterProvider | None = None) -> list[Any]:
    """Register embcache's observable instruments (embcache.metrics.METRICS,
    named by OpenTelemetry's conventions: ``embcache.hits`` unit ``{hit}``, ...)
    on a meter ``"embcache"`` of `meter_provider` (None: the global one), and
    return them. Counts are observable counters, the breaker an observable
    gauge, sizes and limits observable up-down counters; the attribute
    ``cache``, ``tier`` or ``embedder`` names the object. Every live cache, tier
    and embedder is read at each collection (weakly held: a dropped one
    disappears). Call it once per meter provider."""
    from embcache import __version__

    meter = get_meter(METER_NAME, __version__, meter_provider=meter_provider)
    instruments: list[Any] = []
    for metric in METRICS:
        create: Callable[..., Any]
        if metric.counter:
            create = meter.create_observable_counter
        elif metric.field == "breaker_open":
            create = meter.create_observable_gauge
        else:
            create = meter.create_observable_up_down_counter
        instruments.append(
            create(
                metric.otel,
                callbacks=[_callback(metric)],
                unit=metric.unit,
                description=metric.help,
            )
        )
    return instruments
