"""Fresh SharedEmbeddingCache segment names for tests outside tests/shared: each
unlinked after its test."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from embcache import SharedEmbeddingCache


def fresh_name(prefix: str = "embcache-int") -> Iterator[str]:
    """A new segment name in /dev/shm, unlinked afterwards."""
    name = f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"
    yield name
    SharedEmbeddingCache.unlink(name)


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_name()
