"""A flight's owner is its process, not its pid: when a process that held a key
in flight is killed and a new process is given the same pid (pids are reused,
and a child forked from the same parent also has the same thread id), a waiter
takes the key over instead of waiting for the newcomer, and the newcomer
computes the key instead of refusing it as its own. The new process really is
given the dead owner's pid (/proc/sys/kernel/ns_last_pid, which needs root)."""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from forking import wait_child
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


def dead_owner(cache: SharedEmbeddingCache, also: Callable[[], None] = lambda: None) -> int:
    """The pid of a process killed while computing KEY (its marker left held);
    inside compute, before it is killed, the process runs `also`."""
    ready, tell = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready)

            def stuck(missing: list[CacheKey]) -> np.ndarray:
                also()
                os.write(tell, b"x")
                time.sleep(60)
                return rows_of(missing, 1.0)

            cache.get_or_compute([KEY], stuck)
        finally:
            os._exit(1)
    os.close(tell)
    try:
        readable, _, _ = select.select([ready], [], [], 20)
        assert readable and os.read(ready, 1) == b"x", "the owner never got inside compute"
    finally:
        os.close(ready)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return pid


def fork_as(pid: int, body: Callable[[], int]) -> int:
    """Fork a child given `pid` (the kernel hands out ns_last_pid + 1 next, unless
    another process takes it first: then again) that exits with body()'s code; 0
    when no child could be given it (the caller's process never gets `pid`).
    It starts at least 30 ms after the process that had `pid`: start times are
    counted in clock ticks (10 ms), and the kernel takes well over that to hand
    a pid out again on its own (it counts up to pid_max first)."""
    time.sleep(0.03)
    for _ in range(50):
        try:
            with open(LAST_PID, "w") as f:
                f.write(str(pid - 1))
        except PermissionError:  # root without CAP_SYS_ADMIN
            return 0
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
    return 0


def given_again(pid: int, body: Callable[[], int]) -> int:
    child = fork_as(pid, body)
    if not child:
        pytest.skip(f"could not give pid {pid} to a new process")
    return child


def test_a_waiter_takes_over_from_a_dead_owner_whose_pid_was_given_again(
    segment_name: str,
) -> None:
    with SharedEmbeddingCache(segment_name, 1000, None, 4, dim=DIM) as cache:
        owner = dead_owner(cache)
        newcomer = given_again(owner, lambda: time.sleep(60) or 0)  # alive, not the owner
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


def computes_key(cache: SharedEmbeddingCache, value: float) -> Callable[[], int]:
    """A child's body: 0 when get_or_compute computed KEY, 3 when it was refused
    as the dead owner's own computation ("this very call is computing")."""

    def body() -> int:
        try:
            rows = cache.get_or_compute([KEY], lambda m: rows_of(m, value))
        except CallContextError:
            return 3
        return 0 if np.array_equal(rows, rows_of([KEY], value)) else 4

    return body


def test_a_process_given_a_dead_owners_pid_computes_the_key(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, 1000, None, 4, dim=DIM) as cache:
        owner = dead_owner(cache)
        # same pid, and forked from the same thread: the same thread id too
        assert wait_child(given_again(owner, computes_key(cache, 3.0))) == 0
        assert np.array_equal(cache.get(KEY), np.full(DIM, 3.0, np.float32))
        assert cache.verify() == []


def test_a_grandchild_given_its_dead_grandparents_pid_is_not_taken_for_it(
    segment_name: str,
) -> None:
    # the owner forks a child inside compute (the child never asks for a key),
    # then dies; the child forks a grandchild given the owner's pid. The
    # grandchild must not inherit the owner's recorded start time.
    ready, tell = os.pipe()
    verdict, say = os.pipe()

    def fork_the_child() -> None:
        owner = os.getpid()
        if os.fork() == 0:
            code = 1
            try:
                os.close(tell)
                os.read(ready, 1)  # the owner is dead and reaped
                grandchild = fork_as(owner, computes_key(cache, 5.0))
                os.write(say, str(wait_child(grandchild) if grandchild else -1).encode())
                code = 0
            finally:
                os._exit(code)

    with SharedEmbeddingCache(segment_name, 1000, None, 4, dim=DIM) as cache:
        dead_owner(cache, also=fork_the_child)
        os.write(tell, b"g")
        readable, _, _ = select.select([verdict], [], [], 40)
        assert readable, "the grandchild's verdict never came"
        code = int(os.read(verdict, 16))
        for fd in (ready, tell, verdict, say):
            os.close(fd)
        if code == -1:
            pytest.skip("could not give the owner's pid to a new process")
        assert code == 0  # 3: refused as the dead owner's own computation
        assert np.array_equal(cache.get(KEY), np.full(DIM, 5.0, np.float32))
        assert cache.verify() == []
