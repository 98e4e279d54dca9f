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

:func:`make_peer` wraps a peer in a small adapter (put/get/len, copying in
and out) for code that is not timed per operation, such as hit-rate and memory
benchmarks.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMBCACHE_LOOPS",
    "LOOPS",
    "MAPPING_LOOPS",
    "PEERS",
    "Loops",
    "Peer",
    "available_peers",
    "make_mapping",
    "make_peer",
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


def _cachebox(capacity: int) -> Any:
    import cachebox

    return cachebox.LRUCache(capacity)


def _lru_dict(capacity: int) -> Any:
    import lru

    return lru.LRU(capacity)


def _cachetools(capacity: int) -> Any:
    import cachetools

    return cachetools.LRUCache(capacity)


PEERS: dict[str, tuple[str, Callable[[int], Any]]] = {
    "cachebox": ("cachebox", _cachebox),
    "lru-dict": ("lru", _lru_dict),
    "cachetools": ("cachetools", _cachetools),
}
"""name -> (importable module, factory of an LRU mapping bounded to a capacity)."""

LOOPS: dict[str, Loops] = {"embcache": EMBCACHE_LOOPS, **{name: MAPPING_LOOPS for name in PEERS}}
"""Timed loops by contender name: "embcache" (a SyncEmbeddingCache) and each peer."""


def available_peers() -> list[str]:
    """Names of the peers installed in this environment, fastest family first."""
    return [name for name, (module, _) in PEERS.items() if importlib.util.find_spec(module)]


def make_mapping(name: str, capacity: int) -> Any:
    """A new, empty LRU mapping of peer `name`, bounded to `capacity` entries:
    what the timed loops in ``LOOPS[name]`` run on.

    Raises KeyError for an unknown name and ImportError when it is not installed.
    """
    return PEERS[name][1](capacity)


class Peer(Protocol):
    """What an untimed benchmark needs from a cache: put, get (copy in, copy out)
    and size."""

    name: str

    def put(self, key: Any, vector: Vector) -> None: ...

    def get(self, key: Any) -> Vector | None: ...

    def __len__(self) -> int: ...


class MappingPeer:
    """Adapter over an LRU mapping with ``__setitem__`` and ``get``."""

    __slots__ = ("name", "mapping")

    def __init__(self, name: str, mapping: Any) -> None:
        self.name = name
        self.mapping = mapping

    def put(self, key: Any, vector: Vector) -> None:
        self.mapping[key] = vector.copy()

    def get(self, key: Any) -> Vector | None:
        found = self.mapping.get(key)
        return None if found is None else found.copy()

    def __len__(self) -> int:
        return len(self.mapping)


def make_peer(name: str, capacity: int) -> Peer:
    """A new, empty peer cache behind the put/get adapter, bounded to `capacity`
    entries. Not for timed loops: use :data:`LOOPS` and :func:`make_mapping`."""
    return MappingPeer(name, make_mapping(name, capacity))
