"""The peer caches embcache is measured against, behind one small interface.

Each peer is a general-purpose LRU mapping from PyPI. To be a correct embedding
cache it must store a private copy of the caller's array and hand back a copy
the caller may mutate, exactly as embcache does, so every adapter copies on the
way in and on the way out. Keys are CacheKey objects (hashable, with a
precomputed hash), the same objects embcache is given.

Used by ``embcache check --compare`` and by the asv suites in benchmarks/.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Peer", "PEERS", "available_peers", "make_peer"]


class Peer(Protocol):
    """What a benchmark needs from a cache: put, get (copy in, copy out) and size."""

    name: str

    def put(self, key: Any, vector: npt.NDArray[np.float32]) -> None: ...

    def get(self, key: Any) -> npt.NDArray[np.float32] | None: ...

    def __len__(self) -> int: ...


class _MappingPeer:
    """Adapter over an LRU mapping with ``__setitem__`` and ``get``."""

    __slots__ = ("name", "_map", "_get")

    def __init__(self, name: str, mapping: Any) -> None:
        self.name = name
        self._map = mapping
        self._get = mapping.get

    def put(self, key: Any, vector: npt.NDArray[np.float32]) -> None:
        self._map[key] = vector.copy()

    def get(self, key: Any) -> npt.NDArray[np.float32] | None:
        found = self._get(key)
        return None if found is None else found.copy()

    def __len__(self) -> int:
        return len(self._map)


def _cachebox(capacity: int) -> Peer:
    import cachebox

    return _MappingPeer("cachebox", cachebox.LRUCache(capacity))


def _lru_dict(capacity: int) -> Peer:
    import lru

    return _MappingPeer("lru-dict", lru.LRU(capacity))


def _cachetools(capacity: int) -> Peer:
    import cachetools

    return _MappingPeer("cachetools", cachetools.LRUCache(capacity))


# name -> (importable module, factory taking the capacity in entries)
PEERS: dict[str, tuple[str, Callable[[int], Peer]]] = {
    "cachebox": ("cachebox", _cachebox),
    "lru-dict": ("lru", _lru_dict),
    "cachetools": ("cachetools", _cachetools),
}


def available_peers() -> list[str]:
    """Names of the peers installed in this environment, fastest family first."""
    return [name for name, (module, _) in PEERS.items() if importlib.util.find_spec(module)]


def make_peer(name: str, capacity: int) -> Peer:
    """A new, empty peer cache bounded to `capacity` entries.

    Raises KeyError for an unknown name and ImportError when it is not installed.
    """
    return PEERS[name][1](capacity)
