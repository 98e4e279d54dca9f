"""SharedEmbeddingCache rejects what SyncEmbeddingCache rejects with the same
error and the same message: a non-key given to ``in``, and each defect of a
get_many / get_batch ``out`` buffer; the rejected call changes nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from segments import fresh_segment_name, key_of, vector_of

from embcache import SharedEmbeddingCache, SyncEmbeddingCache

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

DIM = 8


class Sub(np.ndarray):
    """A subclass of numpy.ndarray (an `out` both caches refuse)."""


def _readonly() -> np.ndarray:
    out = np.zeros((2, DIM), np.float32)
    out.flags.writeable = False
    return out


OUTS: dict[str, Callable[[], Any]] = {
    "list": lambda: [[0.0] * DIM] * 2,
    "subclass": lambda: np.zeros((2, DIM), np.float32).view(Sub),
    "float64": lambda: np.zeros((2, DIM)),
    "int32": lambda: np.zeros((2, DIM), np.int32),
    "byteswapped": lambda: np.zeros((2, DIM), np.dtype(np.float32).newbyteorder()),
    "readonly": _readonly,
    "not-contiguous": lambda: np.zeros((DIM, 2), np.float32).T,
    "1-d": lambda: np.zeros(2 * DIM, np.float32),
    "3-d": lambda: np.zeros((2, DIM, 1), np.float32),
    "rows": lambda: np.zeros((3, DIM), np.float32),
    "columns": lambda: np.zeros((2, DIM + 1), np.float32),
}


@pytest.fixture
def pair() -> Iterator[tuple[SyncEmbeddingCache, SharedEmbeddingCache]]:
    for name in fresh_segment_name():
        sync = SyncEmbeddingCache(100, None, 4, dim=DIM)
        with SharedEmbeddingCache(name, 100, None, 4, dim=DIM) as shared:
            for cache in (sync, shared):
                cache.put(key_of(1), vector_of(1, DIM))
            yield sync, shared


def _raised(call: Callable[[], Any]) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as info:
        call()
    return info.type, str(info.value)


@pytest.mark.parametrize("defect", sorted(OUTS))
@pytest.mark.parametrize("method", ["get_many", "get_batch"])
def test_a_bad_out_raises_what_sync_raises(
    pair: tuple[SyncEmbeddingCache, SharedEmbeddingCache], defect: str, method: str
) -> None:
    sync, shared = pair
    keys = [key_of(1), key_of(2)]
    want = _raised(lambda: getattr(sync, method)(keys, out=OUTS[defect]()))
    before = shared.get_cache_info()
    got = _raised(lambda: getattr(shared, method)(keys, out=OUTS[defect]()))
    assert got == want
    assert shared.get_cache_info() == before


@pytest.mark.parametrize("non_key", ["x", None, ("doc-1", "shared-test"), 1])
def test_in_with_a_non_key_raises_what_sync_raises(
    pair: tuple[SyncEmbeddingCache, SharedEmbeddingCache], non_key: Any
) -> None:
    sync, shared = pair
    want = _raised(lambda: non_key in sync)
    assert want[0].__name__ == "KeyTypeError"
    before = shared.get_cache_info()
    assert _raised(lambda: non_key in shared) == want
    assert shared.get_cache_info() == before
    assert key_of(1) in shared and key_of(2) not in shared


def test_a_good_out_still_gets_every_row(
    pair: tuple[SyncEmbeddingCache, SharedEmbeddingCache],
) -> None:
    _, shared = pair
    out = np.full((2, DIM), 7.0, np.float32)
    matrix, found = shared.get_many([key_of(1), key_of(2)], out=out)
    assert matrix is out and found.tolist() == [True, False]
    assert out[0].tobytes() == vector_of(1, DIM).tobytes() and not out[1].any()
