"""get_or_compute on a SharedEmbeddingCache: single flight across processes
(compute runs once per key in total, counted exactly), a waiter takes a key over
when its computing process dies or holds it past the timeout, re-entry and
failing computes."""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from segments import fresh_segment_name, key_of, vector_of

from embcache import (
    CacheKey,
    CallContextError,
    InvalidVectorError,
    SharedEmbeddingCache,
    SharedSegmentError,
)

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

DIM = 16
LIMITS = (10_000, None, 16)
KEYS = 300


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


def index_of(key: CacheKey) -> int:
    return int(key.content_hash.split("-")[1])


def counted_compute(counts: np.ndarray, delay: float):  # type: ignore[no-untyped-def]
    def compute(keys: list[CacheKey]) -> np.ndarray:
        time.sleep(delay)
        for k in keys:
            counts[index_of(k)] += 1
        return np.stack([vector_of(index_of(k), DIM) for k in keys])

    return compute


def test_hits_are_read_and_misses_computed_once(segment_name: str) -> None:
    counts = np.zeros(KEYS, np.int64)
    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as cache:
        cache.put(key_of(1), vector_of(1, DIM))
        keys = [key_of(i) for i in (1, 2, 3, 2, 1)]
        got = cache.get_or_compute(keys, counted_compute(counts, 0))
        assert counts[[1, 2, 3]].tolist() == [0, 1, 1]
        for row, i in zip(got, (1, 2, 3, 2, 1)):
            assert row.tobytes() == vector_of(i, DIM).tobytes()
        again = cache.get_or_compute(keys, counted_compute(counts, 0))
        assert again.tobytes() == got.tobytes() and counts.sum() == 2


def worker(name: str, seed: int, counts: np.ndarray, delay: float) -> bool:
    ids = list(range(KEYS))
    random.Random(seed).shuffle(ids)
    with SharedEmbeddingCache(name, *LIMITS, dim=DIM) as cache:
        ok = True
        for start in range(0, KEYS, 50):
            chunk = ids[start : start + 50]
            got = cache.get_or_compute([key_of(i) for i in chunk], counted_compute(counts, delay))
            ok &= all(row.tobytes() == vector_of(i, DIM).tobytes() for row, i in zip(got, chunk))
        return ok


def test_processes_compute_each_key_once_in_total(segment_name: str) -> None:
    shared = mmap.mmap(-1, KEYS * 8)
    counts = np.frombuffer(shared, dtype=np.int64)
    SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM).close()
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=lambda s=s: os._exit(0 if worker(segment_name, s, counts, 0.02) else 3))
        for s in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert counts.tolist() == [1] * KEYS


def test_a_waiter_takes_over_when_the_computing_process_dies(segment_name: str) -> None:
    shared = mmap.mmap(-1, KEYS * 8)
    counts = np.frombuffer(shared, dtype=np.int64)
    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as cache:
        keys = [key_of(i) for i in range(10)]
        started_r, started_w = os.pipe()
        pid = os.fork()
        if pid == 0:

            def hang(missing: list[CacheKey]) -> np.ndarray:
                os.write(started_w, b"x")
                time.sleep(120)
                raise AssertionError

            try:
                cache.get_or_compute(keys, hang)
            finally:
                os._exit(0)
        assert os.read(started_r, 1) == b"x"  # the child holds the keys

        def kill_soon() -> None:
            time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        began = time.monotonic()
        got = cache.get_or_compute(keys, counted_compute(counts, 0))
        waited = time.monotonic() - began
        killer.join()
        assert 0.25 < waited < 5
        assert counts[:10].tolist() == [1] * 10
        assert all(row.tobytes() == vector_of(i, DIM).tobytes() for i, row in enumerate(got))
        os.close(started_r)
        os.close(started_w)


def test_a_waiter_takes_over_a_key_held_past_its_timeout(segment_name: str) -> None:
    shared = mmap.mmap(-1, KEYS * 8)
    counts = np.frombuffer(shared, dtype=np.int64)
    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as cache:
        keys = [key_of(i) for i in range(5)]
        started_r, started_w = os.pipe()
        pid = os.fork()
        if pid == 0:

            def slow(missing: list[CacheKey]) -> np.ndarray:
                os.write(started_w, b"x")
                time.sleep(3)
                return np.stack([vector_of(index_of(k), DIM) for k in missing])

            try:
                cache.get_or_compute(keys, slow)
            finally:
                os._exit(0)
        try:
            assert os.read(started_r, 1) == b"x"
            began = time.monotonic()
            got = cache.get_or_compute(keys, counted_compute(counts, 0), timeout=0.3)
            assert time.monotonic() - began < 2.5
            assert counts[:5].tolist() == [1] * 5
            assert all(row.tobytes() == vector_of(i, DIM).tobytes() for i, row in enumerate(got))
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(started_r)
            os.close(started_w)


def test_a_compute_asking_for_its_own_keys_is_refused(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as cache:

        def reenter(missing: list[CacheKey]) -> np.ndarray:
            return cache.get_or_compute(missing, reenter)

        with pytest.raises(CallContextError):
            cache.get_or_compute([key_of(1)], reenter)
        counts = np.zeros(KEYS, np.int64)  # the key is free again
        cache.get_or_compute([key_of(1)], counted_compute(counts, 0))
        assert counts[1] == 1


def test_a_failing_compute_stores_nothing_and_frees_its_keys(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as cache:

        def boom(missing: list[CacheKey]) -> np.ndarray:
            raise KeyError("model down")

        with pytest.raises(KeyError):
            cache.get_or_compute([key_of(1), key_of(2)], boom)
        with pytest.raises(InvalidVectorError):
            cache.get_or_compute([key_of(1), key_of(2)], lambda m: np.ones((1, DIM)))
        assert len(cache) == 0
        counts = np.zeros(KEYS, np.int64)
        began = time.monotonic()
        cache.get_or_compute([key_of(1), key_of(2)], counted_compute(counts, 0))
        assert time.monotonic() - began < 1 and counts[[1, 2]].tolist() == [1, 1]


def test_closing_while_a_compute_runs_is_refused(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as cache:
        refused: list[BaseException] = []

        def close_inside(missing: list[CacheKey]) -> np.ndarray:
            try:
                cache.close()
            except SharedSegmentError as exc:
                refused.append(exc)
            return np.stack([vector_of(index_of(k), DIM) for k in missing])

        got = cache.get_or_compute([key_of(1)], close_inside)
        assert len(refused) == 1 and got[0].tobytes() == vector_of(1, DIM).tobytes()
        assert cache.get(key_of(1)) is not None


def test_an_error_while_claiming_frees_the_keys_already_claimed(
    segment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_or_compute([a, b]) claims a, then finds b computed by another thread and
    asks whether its owner runs: that check failing (here made to raise) must
    release a's marker too (else a is held by a live thread for ever: this thread's
    next call on a is refused as re-entry, and every other caller waits on it)."""
    import embcache.shared._segment as segment_module

    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as cache:
        inside, go = threading.Event(), threading.Event()

        def held(missing: list[CacheKey]) -> np.ndarray:
            inside.set()
            go.wait(30)
            return np.stack([vector_of(index_of(k), DIM) for k in missing])

        holder = threading.Thread(target=cache.get_or_compute, args=([key_of(2)], held))
        holder.start()
        try:
            assert inside.wait(30)

            def failing_check(pid: int, start: int = 0) -> bool:
                raise OSError("the owner's check failed")

            with monkeypatch.context() as patch:
                patch.setattr(segment_module, "owner_alive", failing_check)
                with pytest.raises(OSError, match="owner's check failed"):
                    cache.get_or_compute([key_of(1), key_of(2)], held)
            counts = np.zeros(KEYS, np.int64)
            began = time.monotonic()
            got = cache.get_or_compute([key_of(1)], counted_compute(counts, 0))
            assert time.monotonic() - began < 1 and counts[1] == 1
            assert np.array_equal(got[0], vector_of(1, DIM))
        finally:
            go.set()
            holder.join(30)
        assert cache.verify() == []


def test_a_marker_naming_no_process_has_a_dead_owner() -> None:
    """A pid below 1 in a marker (corrupt or forged) is no live owner: kill(0) and
    kill(-1) would test a process group or every process, and say 'alive'."""
    from embcache.shared._segment import owner_alive

    assert owner_alive(os.getpid())
    assert not owner_alive(0)
    assert not owner_alive(-1)


def test_an_owner_is_known_by_its_pid_and_its_start_time() -> None:
    """A marker records its owner's start time (low 32 bits of /proc/PID/stat's
    22nd field): the process that holds that pid now but started at another time
    is not the owner."""
    from embcache.shared._segment import owner_alive

    with open(f"/proc/{os.getpid()}/stat", "rb") as f:
        start = int(f.read().rsplit(b")", 1)[1].split()[19]) & 0xFFFFFFFF
    assert owner_alive(os.getpid(), start)
    assert not owner_alive(os.getpid(), (start + 1) & 0xFFFFFFFF or 1)
    assert owner_alive(os.getpid(), 0)  # not recorded: the pid alone
