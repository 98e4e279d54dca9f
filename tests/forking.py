"""Running a check in a forked child, for the tests of what a child inherits
(tests/core/test_fork.py, tests/embedder/test_embedder_model_threads.py)."""

from __future__ import annotations

import os
import time
from typing import Callable

import pytest

CHILD_SECONDS = 20.0


def wait_child(pid: int) -> int:
    """The child's exit status; the child is killed (and the test fails) if it
    has not exited within CHILD_SECONDS."""
    deadline = time.monotonic() + CHILD_SECONDS
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child hung for {CHILD_SECONDS:.0f} s")


def fork_and_run(child: Callable[[], bool]) -> int:
    """Run `child` in a forked child; its exit code: 0 when it returned True,
    3 when False, 2 when it raised."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            code = 0 if child() else 3
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    return wait_child(pid)
