"""The contract of batches, over every cache kind (contract_kinds.KINDS):
get_many / put_many (order, duplicates, the found mask, ``out=``),
get_or_compute (only the misses computed, in one call; the result in the keys'
order), and keys given as any iterable (list, tuple, iterator, generator)."""

from __future__ import annotations

from typing import Any

import contract_kinds
import numpy as np
import pytest
import redis_servers
from contract_kinds import FORMS, KINDS, Kind, Make, counts, key, rows, vec

from embcache import CacheKey

kind = contract_kinds.kind
make = contract_kinds.make
redis_server = redis_servers.redis_server
flushed_server = redis_servers.flushed_server


class Compute:
    """A compute that records the keys of each call and answers vec(number of
    the key), the number being what follows ``hash-`` in its content hash."""

    def __init__(self, dim: int = 4) -> None:
        self.calls: list[list[CacheKey]] = []
        self.dim = dim

    def __call__(self, keys: list[CacheKey]) -> np.ndarray:
        self.calls.append(list(keys))
        return rows([number(k) for k in keys], self.dim)


def number(k: CacheKey) -> int:
    return int(k.content_hash.removeprefix("hash-"))


# -- get_many / put_many -------------------------------------------------------------


def test_get_many_order_duplicates_and_found(kind: Kind, make: Make) -> None:
    c = make(dim=4)
    c.put_many([key(i) for i in range(4)], rows(range(4)))
    wanted = [key(2), key(9), key(0), key(2), key(9), key(3)]
    matrix, found = c.get_many(wanted)
    assert matrix.dtype == np.float32 and matrix.shape == (6, 4) and matrix.flags.c_contiguous
    assert found.dtype == np.bool_ and found.tolist() == [True, False, True, True, False, True]
    np.testing.assert_array_equal(matrix[found], c.stored(rows([2, 0, 2, 3])))
    assert not matrix[~found].any()  # a miss row is zeros
    assert counts(c) == {
        "size": 4, "hits": 4, "misses": 2, "puts": 4, "overwrites": 0, "evictions": 0,
        "expirations": 0, "removals": 0, **kind.tier_counts(asked=1),
    }  # fmt: skip


def test_get_many_into_out(make: Make) -> None:
    c = make(dim=4)
    c.put_many([key(0), key(1)], rows([0, 1]))
    out = np.full((3, 4), 7.0, np.float32)
    matrix, found = c.get_many([key(1), key(5), key(0)], out=out)
    assert matrix is out
    assert found.tolist() == [True, False, True]
    want = np.stack([vec(1), np.zeros(4, np.float32), vec(0)])
    np.testing.assert_array_equal(out, c.stored(want))


def test_get_many_of_nothing(make: Make) -> None:
    c = make(dim=4)
    matrix, found = c.get_many([])
    assert matrix.shape == (0, 4) and found.shape == (0,)
    assert c.info().misses == 0


def test_put_many_stores_rows_in_order(kind: Kind, make: Make) -> None:
    c = make()
    c.put_many([key(i) for i in range(5)], rows(range(5), 4).astype(np.float64))
    c.put_many([key(7)], [[1, 2, 3, 4]])
    c.put_many([], np.empty((0, 4)))
    assert len(c) == 6
    matrix, found = c.get_many([key(i) for i in (4, 7, 0)])
    assert found.all()
    want = np.stack([vec(4, 4), [1, 2, 3, 4], vec(0, 4)])
    np.testing.assert_array_equal(matrix, c.stored(want))
    assert len(c.shared()) == kind.in_tier(6)
    assert c.info().puts == 6


def test_put_many_duplicate_keys_the_last_row_wins(make: Make) -> None:
    c = make(dim=4)
    c.put_many([key(0), key(1), key(0)], rows([10, 1, 20]))
    assert len(c) == 2
    np.testing.assert_array_equal(c.get(key(0)), c.stored(vec(20)))
    info = c.info()
    assert (info.puts, info.overwrites) == (3, 1)


def test_put_many_overwrites(make: Make) -> None:
    c = make(dim=4)
    c.put_many([key(0), key(1)], rows([0, 1]))
    c.put_many([key(1), key(2)], rows([11, 2]))
    matrix, found = c.get_many([key(0), key(1), key(2)])
    assert found.all()
    np.testing.assert_array_equal(matrix, c.stored(rows([0, 11, 2])))
    assert (c.info().overwrites, len(c)) == (1, 3)


# -- get_or_compute --------------------------------------------------------------------


def test_get_or_compute_computes_only_the_misses_in_one_call(kind: Kind, make: Make) -> None:
    c = make(dim=4)
    c.put_many([key(1), key(3)], rows([1, 3]))
    compute = Compute()
    wanted = [key(5), key(1), key(2), key(5), key(3), key(2)]
    result = c.get_or_compute(wanted, compute)
    assert compute.calls == [[key(5), key(2)]]  # the distinct misses, in order, once
    assert result.dtype == np.float32 and result.shape == (6, 4)
    np.testing.assert_array_equal(result, c.stored(rows([5, 1, 2, 5, 3, 2])))
    assert len(c) == 4 and key(5) in c and key(2) in c
    assert len(c.shared()) == kind.in_tier(4)
    # all hits now: no call
    again = c.get_or_compute(list(reversed(wanted)), compute)
    assert len(compute.calls) == 1
    np.testing.assert_array_equal(again, c.stored(rows([2, 3, 5, 2, 1, 5])))


def test_get_or_compute_with_nothing_missing_or_nothing_asked(make: Make) -> None:
    c = make(dim=4)
    c.put(key(0), vec(0))
    compute = Compute()
    np.testing.assert_array_equal(c.get_or_compute([key(0)], compute), c.stored(rows([0])))
    assert c.get_or_compute([], compute).shape[0] == 0
    assert compute.calls == []


@pytest.mark.parametrize("kind", [k for k in KINDS if k.coroutines], ids=repr)
def test_get_or_compute_of_an_async_kind_takes_an_async_compute_too(make: Make) -> None:
    c = make(dim=4)
    compute = Compute()

    async def acompute(keys: list[CacheKey]) -> np.ndarray:
        return compute(keys)

    np.testing.assert_array_equal(
        c.get_or_compute([key(1), key(2)], acompute), c.stored(rows([1, 2]))
    )
    assert compute.calls == [[key(1), key(2)]]


# -- keys as any iterable ----------------------------------------------------------------


def forms_by_kind() -> list[Any]:
    """(kind, form) parameters: every cache kind with every way keys may come."""
    return [pytest.param(k, form, id=f"{k.name}-{form}") for k in KINDS for form in FORMS]


@pytest.mark.parametrize(("kind", "form"), forms_by_kind())
def test_get_many_takes_keys_as_any_iterable(kind: Kind, make: Make, form: str) -> None:
    c = make(dim=4)
    c.put_many([key(0), key(1)], rows([0, 1]))
    wanted = [key(1), key(8), key(0), key(8)]
    matrix, found = c.get_many(FORMS[form](wanted))
    assert found.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(matrix[found], c.stored(rows([1, 0])))
    assert counts(c) == {
        "size": 2, "hits": 2, "misses": 2, "puts": 2, "overwrites": 0, "evictions": 0,
        "expirations": 0, "removals": 0, **kind.tier_counts(asked=1),
    }  # fmt: skip


@pytest.mark.parametrize(("kind", "form"), forms_by_kind())
def test_put_many_takes_keys_as_any_iterable(kind: Kind, make: Make, form: str) -> None:
    c = make(dim=4)
    c.put_many(FORMS[form]([key(i) for i in range(3)]), rows(range(3)))
    assert len(c) == 3
    matrix, found = c.get_many([key(2), key(0), key(1)])
    assert found.all()
    np.testing.assert_array_equal(matrix, c.stored(rows([2, 0, 1])))
    assert len(c.shared()) == kind.in_tier(3)


@pytest.mark.parametrize(("kind", "form"), forms_by_kind())
def test_get_or_compute_takes_keys_as_any_iterable(kind: Kind, make: Make, form: str) -> None:
    c = make(dim=4)
    c.put(key(1), vec(1))
    compute = Compute()
    result = c.get_or_compute(FORMS[form]([key(3), key(1), key(3), key(2)]), compute)
    assert compute.calls == [[key(3), key(2)]]
    np.testing.assert_array_equal(result, c.stored(rows([3, 1, 3, 2])))
    assert len(c.shared()) == kind.in_tier(3)
