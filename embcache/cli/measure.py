"""Timing and machine-state helpers for ``embcache check``.

Every timed loop is plain Python over pre-built inputs (the loops themselves
live in embcache.cli.peers, shared with the asv suites), run with the
garbage collector paused and timed with ``time.perf_counter_ns``. The loop's
own overhead (iterating a list, unpacking a tuple) is part of every figure, for
embcache and for its peers alike: nothing is subtracted.
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Callable

__all__ = [
    "Samples",
    "gc_paused",
    "timed",
    "atimed",
    "rss_bytes",
    "machine_info",
]


@dataclass
class Samples:
    """Per-operation costs (ns) from repeated runs of one measurement."""

    per_op_ns: list[float] = field(default_factory=list)

    def add(self, elapsed_ns: int, ops: int) -> None:
        """Record one run that took `elapsed_ns` for `ops` operations."""
        self.per_op_ns.append(elapsed_ns / ops)

    @property
    def best(self) -> float:
        """The fastest run's cost per operation (ns)."""
        return min(self.per_op_ns)

    @property
    def median(self) -> float:
        """The median run's cost per operation (ns)."""
        return float(median(self.per_op_ns))

    def as_dict(self) -> dict[str, Any]:
        """Best, median and every sample, for JSON."""
        return {
            "best_ns": round(self.best, 2),
            "median_ns": round(self.median, 2),
            "samples_ns": [round(x, 2) for x in self.per_op_ns],
        }


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic garbage collector for the block (restoring its state)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def timed(loop: Callable[..., object], *args: Any) -> int:
    """Nanoseconds taken by one call of ``loop(*args)``, gc paused.

    `loop` is a timed loop (see embcache.cli.peers): it runs every operation
    inline, so the only call made here is the one around the whole loop.
    """
    with gc_paused():
        t0 = time.perf_counter_ns()
        loop(*args)
        t1 = time.perf_counter_ns()
    return t1 - t0


async def atimed(loop: Callable[..., Awaitable[object]], *args: Any) -> int:
    """Nanoseconds taken by ``await loop(*args)``, gc paused."""
    with gc_paused():
        t0 = time.perf_counter_ns()
        await loop(*args)
        t1 = time.perf_counter_ns()
    return t1 - t0


def rss_bytes() -> int:
    """Resident set size of this process now (Linux: /proc/self/statm).

    Elsewhere, falls back to the peak RSS from getrusage, which can only
    overstate growth; returns 0 when neither is available.
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024
    except (ImportError, OSError):
        return 0


def machine_info() -> dict[str, Any]:
    """Platform, Python, numpy, embcache version, CPU count and load average
    (1, 5, 15 min; other processes skew timings) of this run."""
    import numpy

    import embcache

    try:
        usable_cpus: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = None
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": numpy.__version__,
        "embcache": embcache.__version__,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "load_average": load,
    }
