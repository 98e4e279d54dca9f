"""instrument(): embcache's metrics as OpenTelemetry observable instruments, read
through the SDK's InMemoryMetricReader."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import numpy as np
import pytest
from conftest import key, vec
from redis_servers import free_port

from embcache import CachedEmbedder, SyncEmbeddingCache

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    Gauge,
    InMemoryMetricReader,
    Sum,
)

from embcache.metrics import METRICS, instrument  # noqa: E402


@pytest.fixture
def reader() -> InMemoryMetricReader:
    reader = InMemoryMetricReader()
    instruments = instrument(MeterProvider(metric_readers=[reader]))
    assert len(instruments) == len(METRICS)
    return reader


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    """instrument name -> its metric, from one collection of scope "embcache"."""
    data = reader.get_metrics_data()
    metrics: dict[str, Any] = {}
    if data is None:  # no instrument observed anything
        return metrics
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "embcache":
                continue  # the SDK's own metrics (opentelemetry-sdk 1.41 reports some)
            for metric in scope.metrics:
                metrics[metric.name] = metric
    return metrics


def point(metric: Any, label: str, name: str) -> float:
    values = [p.value for p in metric.data.data_points if p.attributes == {label: name}]
    assert len(values) == 1, (metric.name, values)
    return float(values[0])


def test_names_units_and_kinds_follow_the_table(reader: InMemoryMetricReader) -> None:
    cache = SyncEmbeddingCache(10, name="ot-kinds")
    embedder = CachedEmbedder(lambda t: np.ones((len(t), 2)), "m", cache=cache, name="ot-kinds")
    got = collect(reader)
    for m in METRICS:
        if m.kind == "tier":
            continue  # no live tier here: an instrument without points is not exported
        metric = got[m.otel]
        assert metric.unit == m.unit and metric.description == m.help
        if m.counter:
            assert isinstance(metric.data, Sum) and metric.data.is_monotonic
        else:
            assert isinstance(metric.data, Sum) and not metric.data.is_monotonic
    assert got["embcache.hits"].unit == "{hit}"
    assert got["embcache.memory.usage"].unit == "By"
    assert got["embcache.model.time"].unit == "s"
    assert point(got["embcache.entries"], "cache", "ot-kinds") == 0
    assert point(got["embcache.model.calls"], "embedder", "ot-kinds") == 0
    del cache, embedder
    assert all(m.otel.startswith("embcache.") for m in METRICS)
    assert len({m.otel for m in METRICS}) == len(METRICS)


def test_values_after_known_operations(reader: InMemoryMetricReader) -> None:
    cache = SyncEmbeddingCache(2, name="ot-cache")
    for i in range(3):
        cache.put(key(i), vec(i))  # the third evicts the first
    cache.get(key(2))
    cache.get(key(0))
    cache.remove(key(1))

    def model(texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 4), dtype=np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(10), name="ot-emb")
    embedder.embed_sync(["a", "b", "a"])
    asyncio.run(embedder.embed(["a", "c"]))
    got = collect(reader)
    expected = {
        "embcache.hits": 1,
        "embcache.misses": 1,
        "embcache.puts": 3,
        "embcache.evictions": 1,
        "embcache.removals": 1,
        "embcache.expirations": 0,
        "embcache.entries": 1,
        "embcache.entries.limit": 2,
        "embcache.memory.usage": cache.get_cache_info().memory_usage_bytes,
        "embcache.memory.limit": 512 * 2**20,
        "embcache.flight.waits": 0,
    }
    for name, value in expected.items():
        assert point(got[name], "cache", "ot-cache") == value, name
    assert point(got["embcache.model.calls"], "embedder", "ot-emb") == 2
    assert point(got["embcache.model.texts"], "embedder", "ot-emb") == 3
    assert point(got["embcache.texts.from_cache"], "embedder", "ot-emb") == 2
    assert point(got["embcache.model.time"], "embedder", "ot-emb") == embedder.model_seconds
    # cumulative: the next collection sees the new counts
    cache.get(key(2))
    assert point(collect(reader)["embcache.hits"], "cache", "ot-cache") == 2
    del cache, embedder
    gc.collect()
    hits = collect(reader).get("embcache.hits")
    names = [] if hits is None else [p.attributes for p in hits.data.data_points]
    assert {"cache": "ot-cache"} not in names


def test_the_breaker_is_a_gauge(reader: InMemoryMetricReader) -> None:
    pytest.importorskip("redis")
    from redis.asyncio import Redis

    from embcache.redis import FAILURES_TO_OPEN, RedisTier

    async def main() -> None:
        client = Redis(host="127.0.0.1", port=free_port())  # nobody listens there
        tier = RedisTier(client, timeout=1.0, name="ot-tier")
        try:
            got = collect(reader)
            assert isinstance(got["embcache.tier.breaker.open"].data, Gauge)
            assert point(got["embcache.tier.breaker.open"], "tier", "ot-tier") == 0
            assert point(got["embcache.tier.errors"], "tier", "ot-tier") == 0
            assert got["embcache.tier.errors"].unit == "{error}"
            for i in range(FAILURES_TO_OPEN):
                await tier.get_many([key(i)], dim=4)
            got = collect(reader)
            assert point(got["embcache.tier.breaker.open"], "tier", "ot-tier") == 1
            assert point(got["embcache.tier.errors"], "tier", "ot-tier") == FAILURES_TO_OPEN
            assert point(got["embcache.tier.misses"], "tier", "ot-tier") == FAILURES_TO_OPEN
            assert point(got["embcache.tier.hits"], "tier", "ot-tier") == 0
        finally:
            await client.aclose()

    asyncio.run(main())
