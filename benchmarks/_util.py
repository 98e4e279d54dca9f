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
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from time import perf_counter
from typing import Any, Callable

import numpy as np

from embcache import CacheKey

OPS = 1000
"""Operations per timed call."""

SEED = 20240528
"""Seed of every random stream (numpy Generator)."""

MODEL = "nomic-embed-text-v1.5"

PEER_NAMES = ["embcache", "cachebox", "lru-dict", "cachetools"]
"""The ``peer`` parameter. Stable: never reorder, only append."""


def per_op_timer() -> float:
    """asv ``timer`` for loops of OPS operations: reported time is per operation."""
    return perf_counter() / OPS


class PerOp:
    """Mixin: the timing attributes shared by per-operation benchmarks."""

    number = 1
    repeat = (10, 40, 2.0)  # at least 10 samples, at most 40, stop after ~2 s
    warmup_time = 0.05
    timer = staticmethod(per_op_timer)


def make_key(i: int, model: str = MODEL) -> CacheKey:
    """The seed's ``create_test_key(id)``."""
    return CacheKey(f"benchmark_key_{i}", model, f"chunk_{i % 100}")


def make_keys(n: int, start: int = 0) -> list[CacheKey]:
    return [make_key(i) for i in range(start, start + n)]


def sha_key(i: int) -> CacheKey:
    """A realistic key: a 64-hex SHA-256 content hash, a shared model string."""
    return CacheKey(hashlib.sha256(b"%d" % i).hexdigest(), MODEL, f"chunk_{i % 100}")


def make_vector(dim: int) -> np.ndarray:
    """The seed's ``create_test_embedding(size)``: i / size, as float32."""
    return np.arange(dim, dtype=np.float32) / np.float32(dim)


def shuffled(items: list[Any], salt: int = 0) -> list[Any]:
    """`items` in a fixed random order (lookups must not walk memory in order)."""
    rng = np.random.default_rng(SEED + salt)
    return [items[i] for i in rng.permutation(len(items))]


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
    if name == "embcache":
        return
    from embcache._peers import available_peers

    if name not in available_peers():
        raise NotImplementedError(f"peer {name!r} is not installed")


def peer_mapping(name: str, capacity: int) -> Any:
    """The peer's underlying LRU mapping (``make_peer(...)._map``).

    The timed loops copy in (``m[k] = v.copy()``) and out (``m.get(k).copy()``)
    exactly as the adapters in embcache/_peers.py do, but inline: going through
    the adapter's Python method costs a peer ~150 ns per operation that embcache
    (a C method) does not pay, and the comparison must favour the peers, not us.
    """
    from embcache._peers import make_peer

    return make_peer(name, capacity)._map  # type: ignore[attr-defined]
