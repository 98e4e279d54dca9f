"""A flight's owner is its process, not its pid: when a process that held a key
in flight is killed and a new process is given the same pid (pids are reused,
and a child forked from the same parent also has the same thread id), a waiter
takes the key over instead of waiting for the newcomer, and the newcomer
computes the key instead of refusing it as its own. The new process really is
given the dead owner's pid (/proc/sys/kernel/ns_last_pid, which needs root)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from segments import fresh_segment_name, key_of

from embcache import CacheKey, CallContextError, SharedEmbeddingCache

LAST_PID = "/proc/sys/kernel/ns_last_pid"

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
    pytest.mark.skipif(
        not os.access(LAST_PID, os.W_OK), reason=f"choosing a child's pid needs {LAST_PID} (root)"
    ),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

DIM = 16
KEY = key_of(7)


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


def rows_of(keys: list[CacheKey], value: float) -> np.ndarray:
    return np.full((len(keys), DIM), value, dtype=np.float32)


def dead_owner(cache: SharedEmbeddingCache) -> int:
    """The pid of a process killed while computing KEY (its marker left held)."""
    ready, tell = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready)

        def stuck(missing: list[CacheKey]) -> np.ndarray:
            os.write(tell, b"x")
            time.sleep(60)
            return rows_of(missing, 1.0)

        try:
            cache.get_or_compute([KEY], stuck)
        finally:
            os._exit(1)
    os.close(tell)
    assert os.read(ready, 1) == b"x"  # inside compute: KEY is in flight
    os.close(ready)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return pid


def fork_as(pid: int, body: Callable[[], int]) -> int:
    """Fork a child given `pid` (the kernel hands out ns_last_pid + 1 next, unless
    another process takes it first: then again) that exits with body()'s code."""
    for _ in range(50):
        with open(LAST_PID, "w") as f:
            f.write(str(pid - 1))
        child = os.fork()
        if child == 0:
            code = 1
            try:
                code = body() if os.getpid() == pid else 0
            finally:
                os._exit(code)
        if child == pid:
            return child
        os.waitpid(child, 0)
    pytest.skip(f"could not be given pid {pid} again")


def test_a_waiter_takes_over_from_a_dead_owner_whose_pid_was_given_again(
    segment_name: str,
) -> None:
    with SharedEmbeddingCache(segment_name, 1000, None, 4, dim=DIM) as cache:
        owner = dead_owner(cache)
        newcomer = fork_as(owner, lambda: time.sleep(60) or 0)  # alive, not the owner
        got: list[np.ndarray] = []
        waiter = threading.Thread(
            target=lambda: got.append(cache.get_or_compute([KEY], lambda m: rows_of(m, 2.0)))
        )
        try:
            waiter.start()
            waiter.join(10)
            assert got, "the waiter waited for a process that was never the owner"
            assert np.array_equal(got[0], rows_of([KEY], 2.0))
        finally:
            os.kill(newcomer, signal.SIGKILL)
            os.waitpid(newcomer, 0)
            waiter.join(10)  # with the newcomer gone, a waiter that was fooled ends too
        assert np.array_equal(cache.get(KEY), np.full(DIM, 2.0, np.float32))
        assert cache.verify() == []


def test_a_process_given_a_dead_owners_pid_computes_the_key(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, 1000, None, 4, dim=DIM) as cache:
        owner = dead_owner(cache)

        def newcomer() -> int:
            # same pid, and forked from the same thread: the same thread id too
            try:
                rows = cache.get_or_compute([KEY], lambda m: rows_of(m, 3.0))
            except CallContextError:
                return 3  # taken for the dead owner: "this very call is computing"
            return 0 if np.array_equal(rows, rows_of([KEY], 3.0)) else 4

        child = fork_as(owner, newcomer)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert np.array_equal(cache.get(KEY), np.full(DIM, 3.0, np.float32))
        assert cache.verify() == []
