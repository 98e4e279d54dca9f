"""A host-shared cache in monitoring: its series carry a ``segment`` label (the
segment's path) besides ``cache``, in Prometheus and in OpenTelemetry; its
values are the whole segment's (another process's puts included), read once
however many handles this process holds on it."""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import sys
from typing import Any

import numpy as np
import pytest
from segment_names import segment_name  # noqa: F401 (a fixture)

from embcache import CacheKey, SharedEmbeddingCache, SyncEmbeddingCache

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

DIM = 4


def keys(n: int, model: str = "m") -> list[CacheKey]:
    return [CacheKey(f"t{i}", model) for i in range(n)]


def put_in_child(name: str, n: int) -> None:
    """In a spawned process: attach `name` and store keys(n, "child")."""
    with SharedEmbeddingCache.attach(name) as shared:
        shared.put_many(keys(n, "child"), np.ones((n, DIM), np.float32))


def fill(name: str) -> tuple[SharedEmbeddingCache, SharedEmbeddingCache]:
    """A segment with 3 puts here, 2 from another process, 1 hit and 1 miss;
    and a second handle on it."""
    shared = SharedEmbeddingCache(name, 100, None, 1, dim=DIM, label="seg-metrics")
    shared.put_many(keys(3), np.ones((3, DIM), np.float32))
    shared.get(keys(1)[0])
    shared.get(CacheKey("absent", "m"))
    ctx = mp.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        pool.submit(put_in_child, name, 2).result(60)
    return shared, SharedEmbeddingCache.attach(name, label="seg-metrics")


def test_prometheus_labels_a_shared_cache_with_its_segment(segment_name: str) -> None:  # noqa: F811
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from embcache.metrics import PrometheusCollector

    registry = CollectorRegistry()
    registry.register(PrometheusCollector())
    plain = SyncEmbeddingCache(name="plain-metrics")
    plain.put(keys(1)[0], np.ones(DIM))
    shared, other = fill(segment_name)
    with shared, other:
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        text = generate_latest(registry).decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        mine = (("cache", "seg-metrics"), ("segment", shared.path))
        assert samples[("embcache_puts_total", mine)] == 5  # the segment's, once
        assert samples[("embcache_hits_total", mine)] == 1
        assert samples[("embcache_misses_total", mine)] == 1
        assert samples[("embcache_entries", mine)] == 5
        assert samples[("embcache_puts_total", (("cache", "plain-metrics"),))] == 1
        # every cache series of it carries the segment (its single flight, this
        # process's own, is named by the cache alone)
        assert not [
            k for k in samples
            if ("cache", "seg-metrics") in k[1] and k[1] != mine and "flight" not in k[0]
        ]  # fmt: skip
        assert samples[("embcache_flight_waits_total", (("cache", "seg-metrics"),))] == 0
        assert f'segment="{shared.path}"' in text
    del plain


def test_opentelemetry_gives_a_shared_cache_a_segment_attribute(segment_name: str) -> None:  # noqa: F811
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from embcache.metrics import instrument

    reader = InMemoryMetricReader()
    instrument(MeterProvider(metric_readers=[reader]))
    shared, other = fill(segment_name)
    with shared, other:
        data = reader.get_metrics_data()
        assert data is not None
        points: dict[str, list[Any]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                if scope.scope.name == "embcache":
                    for metric in scope.metrics:
                        points[metric.name] = list(metric.data.data_points)
        wanted = {"cache": "seg-metrics", "segment": shared.path}
        puts = [p.value for p in points["embcache.puts"] if dict(p.attributes) == wanted]
        entries = [p.value for p in points["embcache.entries"] if dict(p.attributes) == wanted]
        assert puts == [5] and entries == [5]
        assert not [
            p for p in points["embcache.puts"]
            if dict(p.attributes).get("cache") == "seg-metrics" and dict(p.attributes) != wanted
        ]  # fmt: skip


def test_the_label_is_checked_and_defaults_to_the_segment_name(segment_name: str) -> None:  # noqa: F811
    from embcache import ArgumentTypeError, ArgumentValueError

    with pytest.raises(ArgumentValueError, match="label"):
        SharedEmbeddingCache(segment_name, 10, None, 1, dim=DIM, label="no spaces")
    with pytest.raises(ArgumentTypeError, match="label"):
        SharedEmbeddingCache(segment_name, 10, None, 1, dim=DIM, label=5)
    assert not SharedEmbeddingCache.unlink(segment_name)  # refused before anything was made
    with SharedEmbeddingCache(segment_name, 10, None, 1, dim=DIM) as shared:
        assert shared.name == segment_name
        with SharedEmbeddingCache.attach(segment_name, label="other:name") as other:
            assert other.name == "other:name"
