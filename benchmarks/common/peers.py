"""A peer cache behind a small put/get/len adapter, copying in and out, for the
benchmarks that are not timed per operation (memory, hit rates). The timed
loops are embcache.cli.peers.LOOPS, on the bare mapping of
embcache.cli.peers.make_mapping."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from embcache.cli.peers import make_mapping

__all__ = ["MappingPeer", "Peer", "make_peer"]

Vector = npt.NDArray[np.float32]


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
    entries. Not for timed loops: use embcache.cli.peers.LOOPS and make_mapping."""
    return MappingPeer(name, make_mapping(name, capacity))
