"""Running a check in a forked child, for the tests of what a child inherits
(tests/core/test_fork.py, tests/embedder/test_embedder_model_threads.py)."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from typing import Callable

import pytest

CHILD_SECONDS = 20.0


def wait_child(pid: int) -> int:
    """The child's exit status; the child is killed (and the test fails, saying
    where it hung) if it has not exited within CHILD_SECONDS."""
    deadline = time.monotonic() + CHILD_SECONDS
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    where, asked = ask_where_it_hangs(pid)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    stack = "in the captured stderr" if asked else "none (it hung before installing the handler)"
    pytest.fail(
        f"the forked child hung for {CHILD_SECONDS:.0f} s; {where}; its Python stack: {stack}"
    )


def ask_where_it_hangs(pid: int) -> tuple[str, bool]:
    """What a hung process is doing: the kernel's view of its main thread (the
    wait channel, the system call); then, if it installed a SIGUSR1 handler
    (faulthandler: SIGUSR1 would kill it otherwise), it is sent SIGUSR1 and
    given half a second to write its Python stack wherever it registered.
    Returns the kernel's view and whether the stack was asked for."""
    seen = []
    for name in ("wchan", "syscall"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                seen.append(f"{name}: {f.read().strip() or '-'}")
        except OSError as exc:
            seen.append(f"{name}: unreadable ({exc.strerror})")
    if not _catches(pid, signal.SIGUSR1):
        return ", ".join(seen), False
    os.kill(pid, signal.SIGUSR1)
    time.sleep(0.5)
    return ", ".join(seen), True


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (/proc/PID/status SigCgt)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False


SANITIZED = os.environ.get("EMBCACHE_SANITIZED") == "1"


def _threads_settled(limit: float = 2.0) -> None:
    """Under the sanitizers (tools/sanitize.sh) only: wait until the process's
    OS thread count has held still for 20 ms (at most `limit` seconds), so that
    a thread that was joined but is still being torn down (ASan frees its
    thread state then) is gone before the fork. GCC 12's libasan, which CI's
    sanitizer step uses, takes no lock of its allocator around fork(): a child
    forked while another thread held one would wait for it forever (the
    likeliest reading of the one hang CI's sanitizer step saw, in
    test_child_recomputes_keys_the_parent_was_computing right after a test
    that joined two threads; wait_child now reports where a child hangs).
    glibc's malloc, in every other run, is fork-safe, and there the tests fork
    as they come."""
    deadline = time.monotonic() + limit
    last, still = -1, 0
    while time.monotonic() < deadline and still < 4:
        count = len(os.listdir("/proc/self/task"))
        still = still + 1 if count == last else 0
        last = count
        time.sleep(0.005)


def fork_and_run(child: Callable[[], bool]) -> int:
    """Run `child` in a forked child; its exit code: 0 when it returned True,
    3 when False, 2 when it raised."""
    if SANITIZED:
        _threads_settled()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            try:  # see wait_child; the real stderr, whatever pytest's capture mode
                faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
            except (AttributeError, ValueError, OSError):
                pass
            code = 0 if child() else 3
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    return wait_child(pid)
