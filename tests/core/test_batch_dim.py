"""How a batch lookup decides its dimension when one dimension holds every entry
(the lookup stops at the first live key) or the dim is fixed (no lookup): the
answer is the same as a full look at every key would give."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeClock, key, vec

from embcache import DimensionMismatchError, SyncEmbeddingCache


def test_expired_keys_before_the_first_live_one_fix_nothing() -> None:
    clock = FakeClock()
    c = SyncEmbeddingCache(16, 10.0, 1, clock=clock)
    c.put(key(0), vec(0, 6))
    clock.advance(6.0)
    c.put(key(1), vec(1, 6))
    clock.advance(5.0)  # key 0 expired, key 1 live; both in the one slab of dim 6
    matrix, found = c.get_many([key(0), key("absent"), key(1)])
    assert matrix.shape == (3, 6) and found.tolist() == [False, False, True]
    np.testing.assert_array_equal(matrix[2], vec(1, 6))
    assert not matrix[:2].any()


def test_a_dimension_whose_entries_all_went_does_not_count() -> None:
    c = SyncEmbeddingCache(16, None, 1)
    c.put(key("old"), vec(0, 3))
    c.put(key(1), vec(1, 5))
    assert c.remove(key("old"))  # the slab of dim 3 stays, empty
    matrix, found = c.get_many([key("old"), key(1), key(2)])
    assert matrix.shape == (3, 5) and found.tolist() == [False, True, False]
    c.put(key("old"), vec(2, 3))  # two dimensions live again: a mix is an error
    with pytest.raises(DimensionMismatchError, match="2 different dimensions"):
        c.get_many([key(1), key("old")])


def test_nothing_live_in_any_slab_gives_no_columns() -> None:
    c = SyncEmbeddingCache(16, None, 1)
    c.put(key(0), vec(0, 4))
    c.remove(key(0))
    matrix, found = c.get_many([key(0), key(1)])
    assert matrix.shape == (2, 0) and not found.any()


def test_a_fixed_dim_answers_in_its_dim_hit_or_miss() -> None:
    c = SyncEmbeddingCache(16, None, 1, dim=4)
    matrix, found = c.get_many([key(0)])
    assert matrix.shape == (1, 4) and not found.any()
    c.put(key(0), vec(0, 4))
    matrix, found = c.get_many([key(1), key(0)])
    assert matrix.shape == (2, 4) and found.tolist() == [False, True]
    np.testing.assert_array_equal(matrix[1], vec(0, 4))
    with pytest.raises(DimensionMismatchError):
        c.get_many([key(0)], out=np.empty((1, 5), np.float32))
