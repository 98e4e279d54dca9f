"""EmbeddingCache.wrap over a SharedEmbeddingCache: the asyncio facade drives a
segment through the same code as an in-process core (its batch protocol and
in-process single flight), and what one process stores another reads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing as mp
import sys
import threading
from typing import Any

import numpy as np
import pytest
from conftest import run
from segment_names import segment_name  # noqa: F401 (a fixture)

from embcache import ArgumentTypeError, CacheKey, EmbeddingCache, SharedEmbeddingCache
from embcache.core.protocol import CoreCache
from embcache.facade import cache as facade_module

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

DIM = 16


def keys(n: int, model: str = "m") -> list[CacheKey]:
    return [CacheKey(f"t{i}", model) for i in range(n)]


def rows(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def read_in_child(name: str, n: int) -> tuple[list[bool], bytes]:
    """In a spawned process: attach `name` and read keys(n) through a facade."""

    async def main() -> tuple[list[bool], bytes]:
        with SharedEmbeddingCache.attach(name) as shared:
            facade = EmbeddingCache.wrap(shared)
            matrix, found = await facade.get_many(keys(n))
            return found.tolist(), matrix.tobytes()

    return asyncio.run(main())


def test_wrap_takes_a_shared_cache_and_another_process_reads_what_it_stored(
    segment_name: str,  # noqa: F811
) -> None:
    with SharedEmbeddingCache(segment_name, 1000, None, 8, dim=DIM) as shared:
        facade = EmbeddingCache.wrap(shared)
        assert facade.sync is shared and facade.storage == "float32" and facade.tier is None
        assert facade.name == shared.name == segment_name
        data = rows(50)
        run(facade.put_many(keys(50), data))
        run(facade.put(CacheKey("one", "m"), data[0]))
        got = run(facade.get(CacheKey("one", "m")))
        np.testing.assert_array_equal(got, data[0])
        assert len(facade) == 51 and keys(1)[0] in facade
        ctx = mp.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            found, raw = pool.submit(read_in_child, segment_name, 60).result(timeout=60)
        assert found == [True] * 50 + [False] * 10
        matrix = np.frombuffer(raw, dtype=np.float32).reshape(60, DIM)
        np.testing.assert_array_equal(matrix[:50], data)
        assert not matrix[50:].any()
        assert run(facade.remove(keys(1)[0])) is True
        assert keys(1)[0] not in shared
        run(facade.clear())
        assert len(shared) == 0
        assert repr(facade).startswith("EmbeddingCache.wrap(SharedEmbeddingCache(")


def test_large_batches_go_through_the_sliced_batch_path(
    segment_name: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # slices of 8 rows: put_many takes and stores, get_many reads, in many slices
    monkeypatch.setattr(facade_module, "SLICE_BYTES", 8 * 4 * DIM)
    monkeypatch.setattr(facade_module, "SMALL_KEYS", 4)
    with SharedEmbeddingCache(segment_name, 1000, None, 8, dim=DIM) as shared:
        facade = EmbeddingCache.wrap(shared)
        data = rows(100, seed=1)
        run(facade.put_many(keys(100), data))
        assert shared.get_cache_info().puts == 100
        matrix, found = run(facade.get_many(keys(110)))
        assert found.tolist() == [True] * 100 + [False] * 10
        np.testing.assert_array_equal(matrix[:100], data)
        assert not matrix[100:].any()
        out = np.full((110, DIM), 7.0, dtype=np.float32)
        matrix, _ = run(facade.get_many(keys(110), out))
        assert matrix is out and not out[100:].any()
        bad = data.copy()
        bad[57, 3] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            run(facade.put_many(keys(100, "other"), bad))
        assert not any(k in shared for k in keys(100, "other"))  # nothing of it stored


def test_get_or_compute_is_one_flight_per_key_in_this_process(
    segment_name: str,  # noqa: F811
) -> None:
    calls: list[list[CacheKey]] = []
    started = threading.Event()

    async def compute(missing: list[CacheKey]) -> np.ndarray:
        calls.append(missing)
        started.set()
        await asyncio.sleep(0.05)
        return rows(len(missing), seed=len(calls))

    async def main(facade: EmbeddingCache) -> list[np.ndarray]:
        return list(
            await asyncio.gather(*[facade.get_or_compute(keys(6), compute) for _ in range(5)])
        )

    with SharedEmbeddingCache(segment_name, 1000, None, 8, dim=DIM) as shared:
        facade = EmbeddingCache.wrap(shared)
        results = run(main(facade))
        assert calls == [keys(6)]
        for got in results:
            np.testing.assert_array_equal(got, results[0])
        assert shared.flights is facade.sync.flights
        np.testing.assert_array_equal(shared.get_many(keys(6))[0], results[0])
        with pytest.raises(ValueError, match="dim"):
            run(facade.get_or_compute([CacheKey("x", "m")], lambda m: rows(1, dim=DIM + 1)))
        assert CacheKey("x", "m") not in shared


def test_wrap_refuses_other_objects_and_checks_the_tier(segment_name: str) -> None:  # noqa: F811
    with pytest.raises(ArgumentTypeError, match="SyncEmbeddingCache or a SharedEmbeddingCache"):
        EmbeddingCache.wrap({})  # type: ignore[arg-type]
    with SharedEmbeddingCache(segment_name, 10, None, 1, dim=DIM) as shared:
        with pytest.raises(TypeError):
            EmbeddingCache.wrap(shared, tier=object())  # type: ignore[arg-type]


def test_both_caches_satisfy_the_core_protocol(segment_name: str) -> None:  # noqa: F811
    # what the facade, single flight and the embedder use of a core, by name
    members = [m for m in dir(CoreCache) if not m.startswith("_")] + ["__len__", "__contains__"]
    from embcache import SyncEmbeddingCache

    with SharedEmbeddingCache(segment_name, 10, None, 1, dim=DIM) as shared:
        for cache in (SyncEmbeddingCache(), shared):
            missing = [m for m in members if not hasattr(cache, m)]
            assert missing == [], type(cache).__name__
        assert shared.policy == "clock"


def test_a_compute_asking_for_its_own_keys_is_refused_not_deadlocked(
    segment_name: str,  # noqa: F811
) -> None:
    from embcache import CallContextError

    with SharedEmbeddingCache(segment_name, 1000, None, 8, dim=DIM) as shared:
        facade = EmbeddingCache.wrap(shared)

        async def reentrant(missing: list[CacheKey]) -> np.ndarray:
            await facade.get_or_compute(missing, reentrant)  # its own keys again
            return rows(len(missing))

        async def other(missing: list[CacheKey]) -> np.ndarray:
            # other keys from inside a compute: allowed
            inner = await facade.get_or_compute([CacheKey("inner", "m")], lambda m: rows(1, 5))
            return np.repeat(inner, len(missing), axis=0)

        with pytest.raises(CallContextError):
            run(facade.get_or_compute(keys(2), reentrant))
        assert len(shared) == 0
        got = run(facade.get_or_compute(keys(3), other))
        np.testing.assert_array_equal(got, np.repeat(rows(1, 5), 3, axis=0))
        assert len(shared) == 4


def test_save_through_the_facade_writes_the_segment_s_snapshot(
    segment_name: str,  # noqa: F811
    tmp_path: Any,
) -> None:
    from embcache import SyncEmbeddingCache

    with SharedEmbeddingCache(segment_name, 1000, None, 8, dim=DIM) as shared:
        facade = EmbeddingCache.wrap(shared)
        data = rows(7, seed=4)
        run(facade.put_many(keys(7), data))
        assert run(facade.save(tmp_path / "s.embc")) == 7
    loaded = SyncEmbeddingCache.load(tmp_path / "s.embc")
    np.testing.assert_array_equal(loaded.get_many(keys(7))[0], data)
