"""Helpers of the shared-segment tests: unique segment names that are removed
afterwards, and the vector every test derives from a key."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import numpy as np

from embcache import CacheKey
from embcache.shared import SharedEmbeddingCache

HEADER_CHECKSUM_AT = 184
"""Byte offset of the header's checksum (every header byte before it is summed)."""


def vector_of(i: int, dim: int) -> np.ndarray:
    """The vector key i always holds: a function of i alone, bit for bit."""
    return np.random.default_rng(i).standard_normal(dim).astype(np.float32)


def key_of(i: int) -> CacheKey:
    """Key number i."""
    return CacheKey(f"doc-{i}", "shared-test")


def fresh_segment_name() -> Iterator[str]:
    """A fresh segment name in /dev/shm, unlinked afterwards (the body of each
    test file's `segment_name` fixture)."""
    name = f"embcache-test-{os.getpid()}-{secrets.token_hex(4)}"
    yield name
    SharedEmbeddingCache.unlink(name)
