"""PrometheusCollector in a real prometheus_client registry, scraped through
generate_latest and through its HTTP exposition on 127.0.0.1, the text format
parsed back: each metric's value after known operations."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FakeClock, key, run_python, vec
from redis_servers import RedisServer, require_redis

from embcache import CachedEmbedder, EmbeddingCache, SyncEmbeddingCache

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from embcache.metrics import METRICS, PrometheusCollector  # noqa: E402

Samples = dict[tuple[str, str, str], float]
"""(sample name, label, label value) -> value."""


def parse(text: str) -> Samples:
    """Every sample of an exposition, and checks its families' types and labels."""
    samples: Samples = {}
    types = {m.prometheus: ("counter" if m.counter else "gauge") for m in METRICS}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("embcache_"):
            continue
        assert family.type == types[family.name], family.name
        for sample in family.samples:
            if sample.name.endswith("_created"):  # counters' creation times, if any
                continue
            (label, value), *rest = sample.labels.items()
            assert not rest, sample
            samples[(sample.name, label, value)] = sample.value
    return samples


def scrape(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(PrometheusCollector())
    return registry


def of(samples: Samples, label: str, name: str) -> dict[str, float]:
    """sample name -> value of one object's series."""
    return {s: v for (s, lab, n), v in samples.items() if lab == label and n == name}


def test_every_family_is_described_and_a_second_collector_is_refused(
    registry: CollectorRegistry,
) -> None:
    names = {family.name for family in PrometheusCollector().describe()}
    assert names == {m.prometheus for m in METRICS}
    assert len(METRICS) == 21
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(PrometheusCollector())


def test_cache_counts_after_known_operations(registry: CollectorRegistry) -> None:
    clock = FakeClock()
    cache = SyncEmbeddingCache(3, 60, 1.0, dim=4, clock=clock, name="pc-lru")
    for i in range(3):
        cache.put(key(i), vec(i))
    cache.put(key(0), vec(10))  # an overwrite is a put
    assert cache.get(key(0)) is not None and cache.get(key(1)) is not None
    assert cache.get(key(99)) is None
    cache.put(key(3), vec(3))  # evicts key(2), the least recently used
    assert cache.remove(key(3)) and not cache.remove(key(3))
    clock.advance(61)
    assert cache.get(key(0)) is None  # expired: a miss and an expiration
    got = of(scrape(registry), "cache", "pc-lru")
    info = cache.get_cache_info()
    # reading the counts purges what has expired: key(1) too
    assert (info.expirations, info.size) == (2, 0)
    assert got == {
        "embcache_hits_total": 2,
        "embcache_misses_total": 2,
        "embcache_puts_total": 5,
        "embcache_evictions_total": 1,
        "embcache_expirations_total": 2,
        "embcache_removals_total": 1,
        "embcache_admission_rejections_total": 0,
        "embcache_entries": 0,
        "embcache_max_entries": 3,
        "embcache_memory_bytes": info.memory_usage_bytes,
        "embcache_allocated_bytes": info.allocated_bytes,
        "embcache_memory_budget_bytes": 1048576,
        "embcache_flight_waits_total": 0,
    }
    assert info.allocated_bytes > 0
    cache.put(key(5), vec(5))
    got = of(scrape(registry), "cache", "pc-lru")
    assert (got["embcache_entries"], got["embcache_puts_total"]) == (1, 6)
    assert got["embcache_memory_bytes"] == cache.get_cache_info().memory_usage_bytes > 0


def test_admission_rejections_under_tinylfu(registry: CollectorRegistry) -> None:
    cache = SyncEmbeddingCache(20, dim=4, policy="tinylfu", name="pc-tinylfu")
    for _ in range(4):
        for i in range(20):
            if cache.get(key(i)) is None:
                cache.put(key(i), vec(i))
    for i in range(100, 400):
        cache.put(key(i), vec(i))
    info = cache.get_cache_info()
    assert info.admission_rejections > 0
    got = of(scrape(registry), "cache", "pc-tinylfu")
    assert got["embcache_admission_rejections_total"] == info.admission_rejections
    assert got["embcache_evictions_total"] == info.evictions
    assert got["embcache_entries"] == 20


def test_flight_waits_count_the_keys_waited_for(registry: CollectorRegistry) -> None:
    cache = SyncEmbeddingCache(100, name="pc-flight")
    started, release = threading.Event(), threading.Event()

    def slow(keys: list[Any]) -> np.ndarray:
        started.set()
        assert release.wait(10)
        return np.ones((len(keys), 4), dtype=np.float32)

    keys = [key(i) for i in range(3)]
    owner = threading.Thread(target=cache.get_or_compute, args=(keys, slow))
    owner.start()
    assert started.wait(10)
    waiters = [
        threading.Thread(target=cache.get_or_compute, args=(keys[:2], slow)),
        threading.Thread(target=cache.get_or_compute, args=([keys[2]], slow)),
    ]
    for t in waiters:
        t.start()
    deadline = time.monotonic() + 10
    while cache.flights.waits < 3:  # both waiters are claimed and waiting
        assert time.monotonic() < deadline
        time.sleep(0.01)
    release.set()
    for t in [owner, *waiters]:
        t.join(10)
    got = of(scrape(registry), "cache", "pc-flight")
    assert got["embcache_flight_waits_total"] == 3  # two keys, then one
    assert got["embcache_puts_total"] == 3  # computed once
    cache.get_or_compute(keys, slow)  # all hits: no wait
    assert of(scrape(registry), "cache", "pc-flight")["embcache_flight_waits_total"] == 3


def test_embedder_counts_and_model_seconds(registry: CollectorRegistry) -> None:
    calls: list[list[str]] = []

    def model(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        time.sleep(0.02)
        return np.ones((len(texts), 4), dtype=np.float32)

    embedder = CachedEmbedder(
        model, "m", cache=SyncEmbeddingCache(100, name="pc-emb-cache"), batch_size=2,
        name="pc-emb",
    )  # fmt: skip
    embedder.embed_sync(["a", "b", "c", "a"])  # 3 distinct misses: 2 model calls
    embedder.embed_sync(["a", "d"])  # 1 hit, 1 miss: 1 call
    asyncio.run(embedder.embed(["e", "b"]))  # 1 hit, 1 miss: 1 call
    got = of(scrape(registry), "embedder", "pc-emb")
    seconds = got.pop("embcache_model_seconds_total")
    assert got == {
        "embcache_model_calls_total": 4,
        "embcache_model_texts_total": 5,
        "embcache_texts_from_cache_total": 3,
    }
    assert len(calls) == 4
    assert 4 * 0.02 <= seconds == embedder.model_seconds < 10
    cache = of(scrape(registry), "cache", "pc-emb-cache")
    assert cache["embcache_puts_total"] == 5


def test_same_named_objects_are_one_series_and_dropped_ones_disappear(
    registry: CollectorRegistry,
) -> None:
    first = SyncEmbeddingCache(10, name="pc-shared")
    second = EmbeddingCache(20, name="pc-shared")
    first.put(key(1), vec(1))
    second.sync.put(key(1), vec(1))
    second.sync.put(key(2), vec(2))
    got = of(scrape(registry), "cache", "pc-shared")
    assert (got["embcache_entries"], got["embcache_max_entries"]) == (3, 30)
    del second
    gc.collect()
    got = of(scrape(registry), "cache", "pc-shared")
    assert (got["embcache_entries"], got["embcache_max_entries"]) == (1, 10)
    embedder = CachedEmbedder(lambda t: np.ones((len(t), 2)), "m", cache=first, name="pc-gone")
    assert of(scrape(registry), "embedder", "pc-gone")
    del first, embedder
    gc.collect()
    samples = scrape(registry)
    assert of(samples, "cache", "pc-shared") == {}
    assert of(samples, "embedder", "pc-gone") == {}


@pytest.fixture
def http_registry(registry: CollectorRegistry) -> Iterator[str]:
    """The registry served over HTTP on 127.0.0.1 (a free port); its URL."""
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_http_exposition(http_registry: str) -> None:
    cache = SyncEmbeddingCache(10, name="pc-http")
    cache.put(key(1), vec(1))
    cache.get(key(1))
    cache.get(key(2))
    with urllib.request.urlopen(http_registry, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        got = of(parse(response.read().decode()), "cache", "pc-http")
    assert (got["embcache_hits_total"], got["embcache_misses_total"]) == (1, 1)
    assert (got["embcache_puts_total"], got["embcache_entries"]) == (1, 1)
    cache.get(key(1))
    with urllib.request.urlopen(http_registry, timeout=10) as response:
        got = of(parse(response.read().decode()), "cache", "pc-http")
    assert got["embcache_hits_total"] == 2  # read at scrape time


def test_tier_counts_errors_and_breaker_with_a_stopped_server(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    require_redis()
    from redis.asyncio import Redis

    from embcache.redis import FAILURES_TO_OPEN, RedisTier

    server = RedisServer(tmp_path / "metrics-redis").start()

    async def main() -> None:
        client = Redis(host="127.0.0.1", port=server.port)
        tier = RedisTier(client, timeout=0.5, cooldown_seconds=1.0, name="pc-tier")
        try:
            cache = EmbeddingCache(100, dim=4, tier=tier, name="pc-tiered")
            await cache.put(key(1), vec(1))
            other = EmbeddingCache(100, dim=4, tier=tier, name="pc-tiered-2")
            assert await other.get(key(1)) is not None  # a tier hit
            assert await other.get(key(2)) is None  # a tier miss
            got = of(scrape(registry), "tier", "pc-tier")
            assert got == {
                "embcache_tier_hits_total": 1,
                "embcache_tier_misses_total": 1,
                "embcache_tier_errors_total": 0,
                "embcache_tier_breaker_open": 0,
            }
            # the cache's own counts are under cache=, the tier's under tier=
            mine = of(scrape(registry), "cache", "pc-tiered-2")
            assert (mine["embcache_misses_total"], mine["embcache_puts_total"]) == (2, 1)
            server.stop()
            for i in range(FAILURES_TO_OPEN):
                assert await other.get(key(10 + i)) is None
            got = of(scrape(registry), "tier", "pc-tier")
            assert got["embcache_tier_errors_total"] == FAILURES_TO_OPEN
            assert got["embcache_tier_breaker_open"] == 1
            assert got["embcache_tier_misses_total"] == 1 + FAILURES_TO_OPEN
            assert await other.get(key(20)) is None  # skipped: no new error
            assert of(scrape(registry), "tier", "pc-tier")["embcache_tier_errors_total"] == 3
            server.start()
            deadline = time.monotonic() + 10
            while tier.get_tier_info().breaker != "closed":
                await asyncio.sleep(0.1)
                await other.get(key(30))  # the trial call, once the cooldown passed
                assert time.monotonic() < deadline, tier.get_tier_info()
            got = of(scrape(registry), "tier", "pc-tier")
            assert got["embcache_tier_breaker_open"] == 0
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        server.stop()


LAZY = """
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prometheus_client", "opentelemetry"):
            raise ImportError(f"blocked: {name}")
        return None

import embcache
loaded_by_embcache = "embcache.metrics" in sys.modules
import embcache.metrics
from embcache.metrics import METRICS
libraries = sorted(n for n in sys.modules if n.startswith(("prometheus_client", "opentelemetry")))
sys.meta_path.insert(0, Block())
errors = []
for entry in ("PrometheusCollector", "instrument"):
    try:
        getattr(embcache.metrics, entry)
    except ImportError as exc:
        errors.append(str(exc))
print(json.dumps([loaded_by_embcache, libraries, len(METRICS), errors]))
"""


def test_the_libraries_are_imported_only_when_used(tmp_path: Path) -> None:
    proc = run_python(["-c", LAZY], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded_by_embcache, libraries, n, errors = json.loads(proc.stdout)
    assert (loaded_by_embcache, libraries, n) == (False, [], len(METRICS))
    assert errors == [
        "embcache.metrics.PrometheusCollector needs prometheus_client: "
        'pip install prometheus_client (from a clone of embcache: pip install ".[prometheus]")',
        "embcache.metrics.instrument needs OpenTelemetry: pip install opentelemetry-sdk "
        '(from a clone of embcache: pip install ".[opentelemetry]")',
    ]
