"""Names of caches, tiers and embedders, and the live objects that have one.

Every SyncEmbeddingCache, RedisTier and CachedEmbedder takes an optional
``name=``: a label for monitoring (embcache.metrics reports each live object
under it), never part of a key. A name is a str of 1 to 64 characters from
``A-Z a-z 0-9 _ . : -``. An object made without one gets ``embcache-1``,
``embcache-2``, ... in the order objects are made in this process (one
counter for every kind of object, so no two unnamed objects share a name).

Each object registers itself once, when it is made (``track``); the registry
holds weak references only, so an object that is dropped disappears from
``live``. Nothing here runs on a cache's get or put. Layer: it imports only
embcache.errors, so the core and everything above it may use it.
"""

from __future__ import annotations

import itertools
import re
import weakref
from typing import Any

from embcache.errors import ArgumentTypeError, ArgumentValueError

__all__ = ["KINDS", "NAME_PATTERN", "check_name", "live", "track"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""What a name must match whole."""

KINDS = ("cache", "tier", "embedder", "flights")
"""The kinds of objects tracked: SyncEmbeddingCache, a shared tier (RedisTier),
CachedEmbedder, and a cache's single-flight registry (named as its cache)."""

_counter = itertools.count(1)  # next() is atomic under the GIL
_live: dict[str, weakref.WeakSet[Any]] = {kind: weakref.WeakSet() for kind in KINDS}


def check_name(name: object, what: str = "name") -> str:
    """`name` as given if it is a valid name, else a new generated one when it
    is None; ArgumentTypeError for a non-str, ArgumentValueError for a str that
    is empty, longer than 64 characters or holds another character."""
    if name is None:
        return f"embcache-{next(_counter)}"
    if not isinstance(name, str):
        raise ArgumentTypeError(f"{what} must be a str or None, got {type(name).__name__}")
    if NAME_PATTERN.fullmatch(name) is None:
        raise ArgumentValueError(
            f"{what} must be 1 to 64 characters from A-Z, a-z, 0-9 and _ . : -, got {name!r}"
        )
    return str(name)


def track(kind: str, obj: object) -> None:
    """Register the live `obj` (which has a ``name``) as one of `kind` (KINDS)."""
    _live[kind].add(obj)


def live(kind: str) -> list[Any]:
    """The objects of `kind` alive now (a snapshot: safe while others are made)."""
    return list(_live[kind])
