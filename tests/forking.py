"""Running a check in a forked child, for the tests of what a child inherits
(tests/core/test_fork.py, tests/embedder/test_embedder_model_threads.py)."""

from __future__ import annotations

import faulthandler
import os
import signal
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
    where = _where_it_hangs(pid)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child hung for {CHILD_SECONDS:.0f} s; {where}")


def _where_it_hangs(pid: int) -> str:
    """What a hung child is doing: its Python stack (faulthandler, on SIGUSR1,
    written to its stderr, which the test's captured output shows) and the
    kernel's view of its main thread (the wait channel, the system call)."""
    os.kill(pid, signal.SIGUSR1)
    time.sleep(0.5)
    seen = []
    for name in ("wchan", "syscall"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                seen.append(f"{name}: {f.read().strip() or '-'}")
        except OSError as exc:
            seen.append(f"{name}: unreadable ({exc.strerror})")
    return "its Python stack is in the captured stderr; " + ", ".join(seen)


def fork_and_run(child: Callable[[], bool]) -> int:
    """Run `child` in a forked child; its exit code: 0 when it returned True,
    3 when False, 2 when it raised."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)  # see wait_child
            code = 0 if child() else 3
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    return wait_child(pid)
