"""The peer caches embcache is measured against, and the timed loops that
measure every contender.

Each peer is a general-purpose LRU mapping from PyPI. To be a correct embedding
cache it must store a private copy of the caller's array and hand back a copy
the caller may mutate, exactly as embcache does, so every peer copies on the
way in and on the way out. Keys are CacheKey objects (hashable, with a
precomputed hash), the same objects embcache is given.

**Timed loops.** ``embcache check --compare`` and the asv suites in benchmarks/
time the same functions, :data:`LOOPS`: one loop per contender and operation,
with the operation written inline in the loop body. For a peer that is
``m[k] = v.copy()`` for a put and ``x = m.get(k); x = None if x is None else
x.copy()`` for a get; for embcache it is the bound method, ``put(k, v)`` and
``x = get(k)``. No adapter method sits between the loop and the cache (a Python
method call would add ~50-120 ns to every peer operation that embcache, a C
method, does not pay). Both sides keep each result in ``x`` until the next
operation replaces it, and the loop returns the last one.

The peers are loaded by module name, only when a mapping is made
(:func:`make_mapping`): importing this module loads none of them.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMBCACHE_LOOPS",
    "LOOPS",
    "MAPPING_LOOPS",
    "PEERS",
    "Loops",
    "available_peers",
    "make_mapping",
]

Vector = npt.NDArray[np.float32]
Pairs = Sequence[tuple[Any, Vector]]


# --- the timed loops ---------------------------------------------------------------


def embcache_puts(cache: Any, pairs: Pairs) -> None:
    """``cache.put(k, v)`` for every (k, v); the cache copies `v` itself."""
    put = cache.put
    for k, v in pairs:
        put(k, v)


def embcache_gets(cache: Any, keys: Sequence[Any]) -> object:
    """``x = cache.get(k)`` for every k (a new array, or None); returns the last."""
    get = cache.get
    x = None
    for k in keys:
        x = get(k)
    return x


def embcache_get_matrix(cache: Any, keys: Sequence[Any]) -> object:
    """``cache.get_many(keys)``: one (len(keys), dim) matrix and a found mask."""
    return cache.get_many(keys)


def mapping_puts(m: Any, pairs: Pairs) -> None:
    """``m[k] = v.copy()`` for every (k, v): the peer stores a private copy."""
    for k, v in pairs:
        m[k] = v.copy()


def mapping_gets(m: Any, keys: Sequence[Any]) -> object:
    """``x = m.get(k); x = None if x is None else x.copy()`` for every k: the
    caller gets a copy it may mutate; returns the last."""
    get = m.get
    x = None
    for k in keys:
        x = get(k)
        x = None if x is None else x.copy()
    return x


def mapping_get_matrix(m: Any, keys: Sequence[Any]) -> object:
    """``np.stack([m.get(k).copy() for k in keys])``: every key must be present."""
    get = m.get
    return np.stack([get(k).copy() for k in keys])


@dataclass(frozen=True)
class Loops:
    """The timed loops of one contender: over (key, vector) pairs for puts, over
    keys for gets, and one batch lookup into a matrix."""

    puts: Callable[[Any, Pairs], None]
    gets: Callable[[Any, Sequence[Any]], object]
    get_matrix: Callable[[Any, Sequence[Any]], object]


EMBCACHE_LOOPS = Loops(embcache_puts, embcache_gets, embcache_get_matrix)
MAPPING_LOOPS = Loops(mapping_puts, mapping_gets, mapping_get_matrix)


# --- the peers ---------------------------------------------------------------------


PEERS: dict[str, tuple[str, str]] = {
    "cachebox": ("cachebox", "LRUCache"),
    "lru-dict": ("lru", "LRU"),
    "cachetools": ("cachetools", "LRUCache"),
}
"""name -> (importable module, its LRU mapping class, made as ``cls(capacity)``)."""

LOOPS: dict[str, Loops] = {"embcache": EMBCACHE_LOOPS, **{name: MAPPING_LOOPS for name in PEERS}}
"""Timed loops by contender name: "embcache" (a SyncEmbeddingCache) and each peer."""


def available_peers() -> list[str]:
    """Names of the peers installed in this environment, fastest family first."""
    return [name for name, (module, _) in PEERS.items() if importlib.util.find_spec(module)]


def make_mapping(name: str, capacity: int) -> Any:
    """A new, empty LRU mapping of peer `name`, bounded to `capacity` entries:
    what the timed loops in ``LOOPS[name]`` run on. Imports the peer's module.

    Raises KeyError for an unknown name and ImportError when it is not installed.
    """
    module, cls = PEERS[name]
    return getattr(importlib.import_module(module), cls)(capacity)
