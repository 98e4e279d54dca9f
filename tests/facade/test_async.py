"""EmbeddingCache, the asyncio facade: the same answers as the core, shared stats,
and awaitable from inside a running loop."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from typing import Any, Callable

import numpy as np
import pytest
from conftest import FakeClock, key, vec

from embcache import (
    DimensionMismatchError,
    EmbeddingCache,
    InvalidVectorError,
    SyncEmbeddingCache,
)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_methods_are_coroutines_except_len_and_in() -> None:
    for name in ("put", "get", "remove", "clear", "get_cache_info"):
        assert inspect.iscoroutinefunction(getattr(EmbeddingCache, name)), name
    assert not inspect.iscoroutinefunction(EmbeddingCache.__len__)
    assert not inspect.iscoroutinefunction(EmbeddingCache.__contains__)


def test_constructor_same_signature_and_defaults() -> None:
    c = EmbeddingCache()
    assert isinstance(c.sync, SyncEmbeddingCache)
    info = c.sync.get_cache_info()
    assert (info.max_entries, info.ttl_seconds, info.max_memory_mb, info.dim) == (
        100_000,
        None,
        512.0,
        None,
    )
    c2 = EmbeddingCache(7, 30.0, 2.0, dim=5, clock=FakeClock())
    assert (c2.sync.max_entries, c2.sync.ttl_seconds, c2.sync.max_memory_mb, c2.sync.dim) == (
        7,
        30.0,
        2.0,
        5,
    )
    with pytest.raises(TypeError):
        EmbeddingCache(7, 30.0, 2.0, 5)  # type: ignore[misc]


def test_facade_and_core_share_entries_and_stats() -> None:
    async def main() -> None:
        c = EmbeddingCache(10, dim=4)
        core = c.sync
        assert c.sync is core
        await c.put(key(1), vec(1))
        core.put(key(2), vec(2))
        np.testing.assert_array_equal(core.get(key(1)), vec(1))
        np.testing.assert_array_equal(await c.get(key(2)), vec(2))
        assert await c.get_cache_info() == core.get_cache_info()
        assert len(c) == len(core) == 2
        core.remove(key(1))
        assert key(1) not in c
        core._check_invariants()

    run(main())


def test_same_results_as_the_core_for_one_script() -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    script = []
    rng = np.random.default_rng(4)
    for _ in range(3000):
        i = int(rng.integers(0, 24))
        r = rng.random()
        if r < 0.4:
            script.append(("put", i, int(rng.choice([2, 5, 9]))))
        elif r < 0.8:
            script.append(("get", i, 0))
        elif r < 0.9:
            script.append(("remove", i, 0))
        elif r < 0.97:
            script.append(("tick", 0, 0))
        else:
            script.append(("len", 0, 0))

    core = SyncEmbeddingCache(10, 3.0, 0.002, clock=clock_a)
    core_results = []
    for op, i, d in script:
        if op == "put":
            core_results.append(core.put(key(i), vec(i, d)))
        elif op == "get":
            out = core.get(key(i))
            core_results.append(None if out is None else out.tobytes())
        elif op == "remove":
            core_results.append(core.remove(key(i)))
        elif op == "tick":
            clock_a.advance(0.5)
            core_results.append(None)
        else:
            core_results.append(len(core))

    async def main() -> list:
        facade = EmbeddingCache(10, 3.0, 0.002, clock=clock_b)
        results = []
        for op, i, d in script:
            if op == "put":
                results.append(await facade.put(key(i), vec(i, d)))
            elif op == "get":
                out = await facade.get(key(i))
                results.append(None if out is None else out.tobytes())
            elif op == "remove":
                results.append(await facade.remove(key(i)))
            elif op == "tick":
                clock_b.advance(0.5)
                results.append(None)
            else:
                results.append(len(facade))
        assert dataclasses.asdict(await facade.get_cache_info()) == dataclasses.asdict(
            core.get_cache_info()
        )
        facade.sync._check_invariants()
        return results

    assert run(main()) == core_results


def test_await_inside_a_running_loop_with_other_tasks() -> None:
    async def main() -> None:
        c = EmbeddingCache(100)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        for i in range(50):
            await c.put(key(i), vec(i))
            await asyncio.sleep(0)
            out = await c.get(key(i))
            assert out is not None
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert ticks > 0
        assert len(c) == 50

    run(main())


def test_facade_calls_can_be_gathered() -> None:
    async def main() -> None:
        c = EmbeddingCache(1000)
        await asyncio.gather(*(c.put(key(i), vec(i)) for i in range(200)))
        outs = await asyncio.gather(*(c.get(key(i)) for i in range(200)))
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out, vec(i))
        assert (await c.get_cache_info()).hits == 200

    run(main())


def test_facade_works_from_several_event_loops_in_threads() -> None:
    import threading

    c = EmbeddingCache(64)
    errors: list[BaseException] = []

    def in_thread(base: int) -> None:
        async def main() -> None:
            for i in range(base, base + 200):
                await c.put(key(i), vec(i))
                out = await c.get(key(i))
                assert out is not None
                np.testing.assert_array_equal(out, vec(i))

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=in_thread, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(c) == 64
    c.sync._check_invariants()


def test_repr_and_slots() -> None:
    c = EmbeddingCache(3, dim=2)
    assert repr(c).startswith("EmbeddingCache(")
    assert "max_entries=3" in repr(c)
    with pytest.raises(AttributeError):
        c.extra = 1  # type: ignore[attr-defined]


# --- large batches in slices: what another coroutine can and cannot change -------------------

BIG_DIM = 384
BIG_N = 6000  # about 9 MiB of float32 rows: several 2 MiB slices


async def _meddle(action: Callable[[], object], turns: int = 1) -> None:
    """Run `action` after `turns` turns of the loop (inside a sliced call)."""
    for _ in range(turns):
        await asyncio.sleep(0)
    action()


@pytest.mark.parametrize("source", ["array", "list"])
def test_async_put_many_stores_what_it_took(source: str) -> None:
    """A NaN written into rows of the caller's buffer that were already taken
    (between slices) is not stored: the batch stores its own copy."""
    keys = [key(i) for i in range(BIG_N)]
    matrix = np.random.default_rng(0).standard_normal((BIG_N, BIG_DIM)).astype(np.float32)
    original = matrix.copy()
    given: Any = matrix if source == "array" else [list(r) for r in matrix[:3000]]
    n = BIG_N if source == "array" else 3000

    def poison() -> None:
        if source == "array":
            matrix[0, 0] = np.nan
        else:
            given[0][0] = float("nan")

    async def main() -> None:
        cache = EmbeddingCache(BIG_N, max_memory_mb=40.0)
        meddler = asyncio.create_task(_meddle(poison))
        await cache.put_many(keys[:n], given)
        await meddler
        assert len(cache) == n
        stored = await cache.get(keys[0])
        assert stored is not None
        np.testing.assert_array_equal(stored, original[0])
        got, found = await cache.get_many(keys[:n])
        assert found.all() and np.isfinite(got).all()
        cache.sync._check_invariants()

    run(main())


def test_async_put_many_rejects_a_nan_written_before_its_row_was_taken() -> None:
    keys = [key(i) for i in range(BIG_N)]
    matrix = np.ones((BIG_N, BIG_DIM), np.float32)

    def poison() -> None:
        matrix[-1, 7] = np.nan

    async def main() -> None:
        cache = EmbeddingCache(BIG_N, max_memory_mb=40.0)
        meddler = asyncio.create_task(_meddle(poison))
        with pytest.raises(InvalidVectorError, match=rf"^matrix\[{BIG_N - 1}, 7\] is nan"):
            await cache.put_many(keys, matrix)
        await meddler
        assert len(cache) == 0
        cache.sync._check_invariants()

    run(main())


def test_async_get_many_of_mixed_dims_raises_before_anything_changes() -> None:
    keys = [key(i) for i in range(BIG_N)]

    async def main() -> None:
        cache = EmbeddingCache(BIG_N + 1, max_memory_mb=40.0)  # full after these puts
        await cache.put_many(keys, np.ones((BIG_N, BIG_DIM), np.float32))
        await cache.put(key("small"), vec(1, 5))
        before = dataclasses.asdict(await cache.get_cache_info())
        with pytest.raises(DimensionMismatchError):
            await cache.get_many([*keys, key("small")])
        assert dataclasses.asdict(await cache.get_cache_info()) == before
        # recency untouched: keys[0] is still the least recent entry, evicted first
        await cache.put(key("new"), vec(2, BIG_DIM))
        assert keys[0] not in cache and keys[1] in cache and len(cache) == BIG_N + 1

    run(main())


@pytest.mark.parametrize("with_out", [False, True])
def test_async_get_many_reads_an_entry_changed_between_slices_as_a_miss(with_out: bool) -> None:
    """Another coroutine giving a key of a later slice another dimension makes it
    a miss (counted once), not an error after earlier slices were read."""
    keys = [key(i) for i in range(BIG_N)]
    data = np.random.default_rng(1).standard_normal((BIG_N, BIG_DIM)).astype(np.float32)

    async def main() -> None:
        cache = EmbeddingCache(BIG_N + 1, max_memory_mb=40.0)
        await cache.put_many(keys, data)
        before = await cache.get_cache_info()
        out = np.zeros((BIG_N, BIG_DIM), np.float32) if with_out else None

        def change() -> None:
            cache.sync.put(keys[-1], vec(1, 5))

        meddler = asyncio.create_task(_meddle(change))
        got, found = await cache.get_many(keys, out=out)
        await meddler
        assert found[:-1].all() and not found[-1]
        np.testing.assert_array_equal(got[:-1], data[:-1])
        assert not got[-1].any()
        after = await cache.get_cache_info()
        assert (after.hits - before.hits, after.misses - before.misses) == (BIG_N - 1, 1)

    run(main())
