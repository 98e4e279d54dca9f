"""Shared helpers for the asv suites (no benchmarks here).

Timing convention used by every ``time_`` benchmark in this directory, unless
its class docstring says otherwise:

* each call of a ``time_`` method performs ``OPS`` (1000) operations in a plain
  ``for`` loop over pre-built keys;
* ``number = 1``: asv runs ``setup`` before every timed call (asv_runner 0.3
  does so whenever a class has a ``setup``; with ``number = 1`` older runners
  do the same), so ``setup`` is where per-call state is reset (a cache cleared,
  a fresh batch of never-used keys made) and it is never timed;
* ``timer = per_op_timer``: the clock asv reads is ``perf_counter() / OPS``, so
  the seconds asv reports (and stores, plots and compares) are seconds **per
  operation**, not per call. The loop's own cost (~15 ns per iteration) is
  included and is the same for every library.

Expensive state (a filled cache, a million entries) is built once per process
by :func:`memo` and reused by the setups that follow; building it also touches
every page that the timed code will use, so page faults are never timed.

Keys, vectors, the model string and the RNG seed are the shared workloads of
embcache.cli.workloads (also used by ``embcache check`` and the tests); the
timed loops comparing embcache with its peers are embcache.cli.peers.LOOPS.
Code only the suites use lives in benchmarks/common/.
"""

from __future__ import annotations

from collections.abc import Hashable
from time import perf_counter
from typing import Any, Callable, TypeVar

from embcache import CacheKey
from embcache.cli.peers import LOOPS, Loops, available_peers, make_mapping
from embcache.cli.workloads import MODEL, RNG_SEED, rng, sha_key, workload_key, workload_vector

__all__ = [
    "LOOPS",
    "MODEL",
    "Loops",
    "OPS",
    "PEER_NAMES",
    "SEED",
    "PerOp",
    "make_key",
    "make_keys",
    "make_vector",
    "memo",
    "peer_mapping",
    "require_peer",
    "sha_key",
    "shuffled",
]

OPS = 1000
"""Operations per timed call."""

SEED = RNG_SEED
"""Seed of every random stream (numpy Generator): embcache.cli.workloads.RNG_SEED."""

PEER_NAMES = ["embcache", "cachebox", "lru-dict", "cachetools"]
"""The ``peer`` parameter. Stable: never reorder, only append."""

# The shared workloads (embcache.cli.workloads), under the names the suites use.
make_key = workload_key
make_vector = workload_vector

T = TypeVar("T")


def make_keys(n: int, start: int = 0) -> list[CacheKey]:
    """Keys number `start` .. `start + n - 1` (:func:`make_key`)."""
    return [workload_key(i) for i in range(start, start + n)]


def shuffled(items: list[T], salt: int = 0) -> list[T]:
    """`items` in a fixed random order (lookups must not walk memory in order),
    from the shared RNG seed plus `salt`."""
    return [items[int(i)] for i in rng(salt).permutation(len(items))]


def per_op_timer() -> float:
    """asv ``timer`` for loops of OPS operations: reported time is per operation."""
    return perf_counter() / OPS


class PerOp:
    """Mixin: the timing attributes shared by per-operation benchmarks."""

    number = 1
    repeat = (10, 40, 2.0)  # at least 10 samples, at most 40, stop after ~2 s
    warmup_time = 0.05
    timer = staticmethod(per_op_timer)


_MEMO: dict[Hashable, Any] = {}


def memo(key: Hashable, build: Callable[[], Any]) -> Any:
    """Build expensive state once per process; asv re-runs ``setup`` per call."""
    try:
        return _MEMO[key]
    except KeyError:
        value = _MEMO[key] = build()
        return value


def require_peer(name: str) -> None:
    """Skip (asv: NotImplementedError in setup) when a peer is not installed."""
    if name.startswith("embcache"):
        return
    if name not in available_peers():
        raise NotImplementedError(f"peer {name!r} is not installed")


def peer_mapping(name: str, capacity: int) -> Any:
    """The peer's LRU mapping, bounded to `capacity` entries: what the timed
    loops ``LOOPS[name]`` (embcache.cli.peers, shared with ``embcache check
    --compare``) run on, copying in (``m[k] = v.copy()``) and out inline."""
    return make_mapping(name, capacity)
