"""Concurrency: many threads (and asyncio tasks) on one cache that evicts all the
time. Every vector encodes its key and version with a checksum, so a torn read or
another key's vector can never pass unnoticed."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from conftest import by_profile, key

from embcache import CacheKey, EmbeddingCache, SyncEmbeddingCache

N_KEYS = 96
KEYS = [CacheKey(f"stress-{i}", "model", f"chunk-{i % 7}") for i in range(N_KEYS)]


def dim_of(key_id: int) -> int:
    return 8 + (key_id % 4) * 12          # several dims: 8, 20, 32, 44


def encode(key_id: int, version: int, dim: int | None = None) -> np.ndarray:
    dim = dim_of(key_id) if dim is None else dim
    v = np.full(dim, key_id + version * 0.5, dtype=np.float32)
    v[0] = key_id
    v[1] = version
    v[-1] = key_id * 4096 + version        # checksum, exact in float32
    return v


def check(key_id: int, out: np.ndarray, dim: int | None = None) -> int:
    """Assert ``out`` is a whole vector written for ``key_id``; return its version."""
    dim = dim_of(key_id) if dim is None else dim
    assert out.dtype == np.float32
    assert out.shape == (dim,), f"key {key_id}: shape {out.shape}, expected ({dim},)"
    assert out[0] == key_id, f"key {key_id}: got a vector of key {out[0]}"
    version = int(out[1])
    assert out[-1] == key_id * 4096 + version, f"key {key_id}: torn vector (checksum)"
    assert (out[2:-1] == np.float32(key_id + version * 0.5)).all(), f"key {key_id}: torn body"
    return version


@dataclass
class Tally:
    gets: int = 0
    hits: int = 0
    misses: int = 0
    puts: int = 0
    removed: int = 0
    errors: list[BaseException] = field(default_factory=list)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads far more often than the default 5 ms, for more interleavings."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def worker(cache: SyncEmbeddingCache, seed: int, ops: int, tally: Tally,
           start: threading.Barrier) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, N_KEYS, ops)
    kinds = rng.random(ops)
    start.wait()
    try:
        for n in range(ops):
            i = int(ids[n])
            kind = kinds[n]
            if kind < 0.45:
                cache.put(KEYS[i], encode(i, (seed * 31 + n) % 4000))
                tally.puts += 1
            elif kind < 0.9:
                out = cache.get(KEYS[i])
                tally.gets += 1
                if out is None:
                    tally.misses += 1
                else:
                    tally.hits += 1
                    check(i, out)
            else:
                tally.removed += cache.remove(KEYS[i])
            if n % 64 == 0:
                assert (KEYS[i] in cache) in (True, False)
    except BaseException as exc:  # reported by the main thread
        tally.errors.append(exc)


def run_threads(cache: SyncEmbeddingCache, n_threads: int, ops: int) -> list[Tally]:
    tallies = [Tally() for _ in range(n_threads)]
    start = threading.Barrier(n_threads)
    threads = [
        threading.Thread(target=worker, args=(cache, seed, ops, tallies[seed], start))
        for seed in range(n_threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a worker thread hung (deadlock?)"
    for t in tallies:
        if t.errors:
            raise t.errors[0]
    return tallies


def assert_consistent(cache: SyncEmbeddingCache, tallies: list[Tally], base_puts: int = 0) -> None:
    cache._check_invariants()
    info = cache.get_cache_info()
    gets = sum(t.gets for t in tallies)
    assert info.hits + info.misses == gets
    assert info.hits == sum(t.hits for t in tallies)
    assert info.misses == sum(t.misses for t in tallies)
    assert info.puts == base_puts + sum(t.puts for t in tallies)
    assert info.removals == sum(t.removed for t in tallies)
    assert info.size <= info.max_entries
    assert info.memory_usage_bytes <= info.memory_budget_bytes
    for i, k in enumerate(KEYS):
        out = cache.get(k)
        if out is not None:
            check(i, out)
    cache._check_invariants()


@pytest.mark.slow
@pytest.mark.usefixtures("fast_switching")
def test_sixteen_threads_entry_bound() -> None:
    cache = SyncEmbeddingCache(24)                 # 96 keys, 24 slots: constant eviction
    tallies = run_threads(cache, 16, by_profile(default=10_000, ci=40_000))
    assert cache.get_cache_info().evictions > 1000
    assert_consistent(cache, tallies)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_switching")
def test_sixteen_threads_memory_bound() -> None:
    cache = SyncEmbeddingCache(1000, max_memory_mb=0.004)   # ~30 small entries fit
    tallies = run_threads(cache, 16, by_profile(default=10_000, ci=40_000))
    assert cache.get_cache_info().evictions > 1000
    assert_consistent(cache, tallies)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_switching")
def test_sixteen_threads_fixed_dim_with_ttl() -> None:
    # a 1 ms TTL on the system clock: expiry, eviction and overwrites all interleave
    dim = 16
    cache = SyncEmbeddingCache(20, 0.001, dim=dim)
    tallies = [Tally() for _ in range(16)]
    start = threading.Barrier(16)

    def run(seed: int) -> None:
        rng = np.random.default_rng(seed)
        tally = tallies[seed]
        start.wait()
        try:
            for n in range(by_profile(default=5_000, ci=20_000)):
                i = int(rng.integers(0, N_KEYS))
                if n % 2:
                    cache.put(KEYS[i], encode(i, n % 4000, dim))
                    tally.puts += 1
                else:
                    out = cache.get(KEYS[i])
                    tally.gets += 1
                    if out is None:
                        tally.misses += 1
                    else:
                        tally.hits += 1
                        check(i, out, dim)
                if n % 500 == 0:
                    len(cache)
        except BaseException as exc:
            tally.errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    for t in tallies:
        if t.errors:
            raise t.errors[0]
    cache._check_invariants()
    info = cache.get_cache_info()
    assert info.hits + info.misses == sum(t.gets for t in tallies)
    assert info.puts == sum(t.puts for t in tallies)
    time.sleep(0.002)
    assert len(cache) == 0                          # everything has expired by now
    assert cache.get_cache_info().memory_usage_bytes == 0
    cache._check_invariants()


@pytest.mark.slow
@pytest.mark.usefixtures("fast_switching")
def test_threads_with_concurrent_clear_and_info() -> None:
    cache = SyncEmbeddingCache(32)
    stop = threading.Event()
    problems: list[BaseException] = []

    def clearer() -> None:
        try:
            while not stop.is_set():
                cache.clear()
                info = cache.get_cache_info()
                assert info.size <= 32
                assert info.memory_usage_bytes <= info.memory_budget_bytes
                len(cache)
                time.sleep(0.0005)
        except BaseException as exc:
            problems.append(exc)

    side = threading.Thread(target=clearer)
    side.start()
    try:
        tallies = run_threads(cache, 8, 30_000)
    finally:
        stop.set()
        side.join(timeout=60)
    if problems:
        raise problems[0]
    assert_consistent(cache, tallies)


@pytest.mark.slow
def test_large_rows_copied_without_the_gil() -> None:
    # rows of >= 256 KiB are copied with the GIL released while the cache lock is
    # held: other threads must neither deadlock nor see a partial row
    dim = 80_000
    cache = SyncEmbeddingCache(6, max_memory_mb=4.0, dim=dim)
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def run(seed: int) -> None:
        start.wait()
        try:
            for n in range(600):
                i = (seed * 7 + n) % 10
                if n % 3 == 0:
                    cache.put(KEYS[i], encode(i, n, dim))
                else:
                    out = cache.get(KEYS[i])
                    if out is not None:
                        check(i, out, dim)
                    len(cache)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "deadlock between the cache lock and the GIL"
    if errors:
        raise errors[0]
    cache._check_invariants()


@pytest.mark.slow
def test_asyncio_tasks_share_one_cache() -> None:
    async def task(cache: EmbeddingCache, seed: int, tally: Tally) -> None:
        rng = np.random.default_rng(seed)
        for n in range(10_000):
            i = int(rng.integers(0, N_KEYS))
            r = rng.random()
            if r < 0.45:
                await cache.put(KEYS[i], encode(i, n % 4000))
                tally.puts += 1
            elif r < 0.9:
                out = await cache.get(KEYS[i])
                tally.gets += 1
                if out is None:
                    tally.misses += 1
                else:
                    tally.hits += 1
                    check(i, out)
            else:
                tally.removed += await cache.remove(KEYS[i])
            if n % 3 == 0:
                await asyncio.sleep(0)         # let the other tasks interleave

    async def main() -> list[Tally]:
        cache = EmbeddingCache(20)
        tallies = [Tally() for _ in range(16)]
        await asyncio.gather(*(task(cache, s, tallies[s]) for s in range(16)))
        assert_consistent(cache.sync, tallies)
        info = await cache.get_cache_info()
        assert info.evictions > 100
        return tallies

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.usefixtures("fast_switching")
def test_asyncio_tasks_and_threads_together() -> None:
    cache = EmbeddingCache(24)
    thread_tallies: list[Tally] = []

    async def main() -> None:
        async def task(seed: int, tally: Tally) -> None:
            for n in range(5000):
                i = (seed * 13 + n * 7) % N_KEYS
                if n % 2:
                    await cache.put(KEYS[i], encode(i, n % 4000))
                    tally.puts += 1
                else:
                    out = await cache.get(KEYS[i])
                    tally.gets += 1
                    tally.hits += out is not None
                    tally.misses += out is None
                    if out is not None:
                        check(i, out)
                await asyncio.sleep(0)

        task_tallies = [Tally() for _ in range(8)]
        workers = asyncio.gather(
            asyncio.to_thread(lambda: thread_tallies.extend(run_threads(cache.sync, 4, 30_000))),
            *(task(s, task_tallies[s]) for s in range(8)),
        )
        await workers
        assert_consistent(cache.sync, thread_tallies + task_tallies)

    asyncio.run(main())


def test_user_clock_read_outside_the_lock_keeps_expiry_order() -> None:
    """Thread A reads the (monotonic) user clock, then thread B reads a later time
    and finishes its put before A's put takes the lock. A's write takes effect
    after B's, so it must not be stamped earlier than B's: the core never moves
    time backwards, A's entry expires with B's (at 105 + 10), write order stays
    expiry order, and len() never counts an expired entry."""
    lock = threading.Lock()
    now = [100.0]
    a_has_read = threading.Event()
    b_done = threading.Event()

    def clock() -> float:
        with lock:
            value = now[0]
        if threading.current_thread().name == "writer-A" and not a_has_read.is_set():
            a_has_read.set()
            # (a core that called the clock under its lock would block B here: give up
            # waiting after a while rather than deadlock; the order is then A, B)
            b_done.wait(2)
        return value

    cache = SyncEmbeddingCache(10, 10.0, clock=clock)
    errors: list[BaseException] = []

    def writer_a() -> None:
        try:
            cache.put(key("A"), [1.0])      # reads t=100, stores after B
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer_a, name="writer-A")
    thread.start()
    assert a_has_read.wait(10)
    with lock:
        now[0] = 105.0
    cache.put(key("B"), [2.0])              # t=105: expires at 115
    b_done.set()
    thread.join(10)
    assert not thread.is_alive() and not errors, errors
    cache._check_invariants()
    with lock:
        now[0] = 112.0                      # A took effect after B (t=105): both live
    assert key("A") in cache and key("B") in cache
    assert len(cache) == 2
    with lock:
        now[0] = 115.0                      # both expire at 105 + 10
    assert key("A") not in cache and key("B") not in cache
    assert len(cache) == 0
    assert cache.get_cache_info().expirations == 2
    cache._check_invariants()


def mixed_worker(cache: SyncEmbeddingCache, seed: int, ops: int, done: list[int],
                 errors: list[BaseException], start: threading.Barrier) -> None:
    """put / get / remove / get_many / put_many / get_or_compute (a third of the
    computes fail) over keys of four dimensions; every vector read is checked."""
    rng = np.random.default_rng(1000 + seed)
    ids = rng.integers(0, N_KEYS, ops)
    kinds = rng.random(ops)
    start.wait()
    try:
        for n in range(ops):
            i = int(ids[n])
            kind = kinds[n]
            if kind < 0.35:
                cache.put(KEYS[i], encode(i, n % 4000))
            elif kind < 0.70:
                out = cache.get(KEYS[i])
                if out is not None:
                    check(i, out)
            elif kind < 0.78:
                cache.remove(KEYS[i])
            elif kind < 0.86:
                same = [(i + 4 * j) % N_KEYS for j in range(3)]  # one dimension
                matrix, found = cache.get_many([KEYS[j] for j in same])
                for j, row, hit in zip(same, matrix, found):
                    if hit:
                        check(j, row)
            elif kind < 0.92:
                same = [(i + 4 * j) % N_KEYS for j in range(3)]
                cache.put_many([KEYS[j] for j in same], np.stack([encode(j, 1) for j in same]))
            else:
                same = [(i + 4 * j) % N_KEYS for j in range(2)]
                by_key = {KEYS[j]: j for j in same}
                fail = n % 3 == 0

                def compute(
                    missing: list[CacheKey], fail: bool = fail, by_key: dict = by_key
                ) -> np.ndarray:
                    if fail:
                        raise LookupError("compute failed on purpose")
                    return np.stack([encode(by_key[k], 2) for k in missing])

                try:
                    rows = cache.get_or_compute([KEYS[j] for j in same], compute)
                except LookupError:
                    pass
                else:
                    for j, row in zip(same, rows):
                        check(j, row)
            done[seed] = n
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_sixteen_threads_every_operation_and_a_fork_in_the_middle() -> None:
    cache = SyncEmbeddingCache(24, None, 0.004)  # both bounds bite: constant eviction
    n_threads, ops = 16, by_profile(default=25_000, ci=200_000)
    done = [0] * n_threads
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads + 1)
    threads = [
        threading.Thread(target=mixed_worker, args=(cache, s, ops, done, errors, start))
        for s in range(n_threads)
    ]
    for t in threads:
        t.start()
    start.wait()
    deadline = time.monotonic() + 300
    while sum(done) < n_threads * ops // 2 and not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = os.fork()
    if pid == 0:  # the child: the cache must be usable, then leave without pytest
        code = 1
        try:
            cache.put(KEYS[0], encode(0, 7))
            check(0, cache.get(KEYS[0]))
            rows = cache.get_or_compute([KEYS[1]], lambda m: np.stack([encode(1, 3)]))
            check(1, rows[0])
            cache._check_invariants()
            code = 0
        finally:
            os._exit(code)
    status = None
    child_deadline = time.monotonic() + 30
    while time.monotonic() < child_deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a worker thread hung (deadlock?)"
    if errors:
        raise errors[0]
    assert status is not None and os.waitstatus_to_exitcode(status) == 0, "the forked child failed"
    info = cache.get_cache_info()
    assert info.evictions > 10_000
    assert info.size <= 24 and info.memory_usage_bytes <= info.memory_budget_bytes
    assert cache.flights.in_flight() == 0
    cache._check_invariants()
    for i, k in enumerate(KEYS):
        out = cache.get(k)
        if out is not None:
            check(i, out)


def test_a_waiter_is_not_starved_by_a_thread_looping_on_long_copies() -> None:
    # Before 3.13 the lock was a flag: a thread calling get_many in a loop drops
    # the GIL only inside its GIL-free copy, with the lock held, and retakes the
    # lock as soon as it is free, so another thread could wait forever.
    dim = 4096
    c = SyncEmbeddingCache(300, None, 64, dim=dim)
    keys = [key(i) for i in range(256)]
    c.put_many(keys, np.ones((256, dim), np.float32))  # each get_many copies 4 MiB
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            c.get_many(keys)

    t = threading.Thread(target=loop)
    t.start()
    try:
        start = time.monotonic()
        for i in range(200):
            c.put(key(("waiter", i)), np.zeros(dim, np.float32))
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        t.join()
    assert elapsed < 30, f"200 puts waited {elapsed:.1f} s for the lock"
    c._check_invariants()
