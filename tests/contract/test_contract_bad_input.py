"""Bad input, over every cache kind (contract_kinds.KINDS): each rejected call
raises the right EmbcacheError subclass (which is also the matching built-in)
and leaves the cache exactly as it was: the same len, vectors and get_cache_info
counts (a get_or_compute whose compute answers badly has looked its keys up, and
counts exactly those lookups), and, for a tiered kind, nothing written to or
deleted from the tier. Also: what a tiered put stores in-process is what it
writes to the tier, even for an array-like whose conversion is not stable."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import contract_kinds
import numpy as np
import pytest
import redis_servers
from conftest import key
from contract_kinds import (
    FORMS,
    Driver,
    Kind,
    Make,
    assert_answer,
    assert_unchanged,
    observe,
    rows,
    vec,
)

from embcache import (
    ArgumentTypeError,
    ArgumentValueError,
    CacheKey,
    DimensionMismatchError,
    EmbcacheError,
    EntryTooLargeError,
    InvalidVectorError,
    KeyTypeError,
    VectorTypeError,
)

kind = contract_kinds.kind
make = contract_kinds.make
redis_server = redis_servers.redis_server
flushed_server = redis_servers.flushed_server

DIM = 4
PRESENT = [key(i) for i in range(5)]


def _nan_at(i: int, j: int, n: int = 3) -> np.ndarray:
    m = rows(range(10, 10 + n), DIM)
    m[i, j] = np.nan
    return m


def _readonly(shape: tuple[int, ...]) -> np.ndarray:
    a = np.zeros(shape, np.float32)
    a.flags.writeable = False
    return a


def _answer(matrix: Any) -> Callable[[list[CacheKey]], Any]:
    return lambda keys: matrix


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Driver], Any]
    error: type[EmbcacheError]
    looked_up: tuple[int, int] = (0, 0)
    """(hits, misses) the call counted before its input was found bad: only a
    get_or_compute whose compute answered badly has looked its keys up."""


CASES = [
    # put: the key, then the vector (a new key and an existing one alike)
    Case("put-key-str", lambda c: c.put("hash-1", vec(1)), KeyTypeError),
    Case("put-key-none", lambda c: c.put(None, vec(1)), KeyTypeError),
    Case("put-key-tuple", lambda c: c.put(("hash-1", "m"), vec(1)), KeyTypeError),
    Case("put-2d", lambda c: c.put(key(9), [[1, 2, 3, 4]]), InvalidVectorError),
    Case("put-scalar", lambda c: c.put(key(9), 1.0), InvalidVectorError),
    Case("put-empty", lambda c: c.put(key(9), []), InvalidVectorError),
    Case("put-nan", lambda c: c.put(key(9), [0.0, np.nan, 0.0, 0.0]), InvalidVectorError),
    Case("put-inf-over-existing", lambda c: c.put(key(1), [0, 0, 0, -np.inf]), InvalidVectorError),
    Case("put-overflow", lambda c: c.put(key(2), [1e39, 0, 0, 0]), InvalidVectorError),
    Case("put-dim", lambda c: c.put(key(1), vec(1, DIM + 1)), DimensionMismatchError),
    Case("put-strings", lambda c: c.put(key(9), ["a", "b", "c", "d"]), VectorTypeError),
    Case("put-none", lambda c: c.put(key(1), None), VectorTypeError),
    Case("put-complex", lambda c: c.put(key(9), np.ones(DIM, complex)), VectorTypeError),
    # put_many: checked whole before any row is stored
    Case("put_many-key", lambda c: c.put_many([key(9), "k", key(8)], rows([1, 2, 3])),
         KeyTypeError),
    Case("put_many-keys-int", lambda c: c.put_many(5, rows([1])), KeyTypeError),
    Case("put_many-rows", lambda c: c.put_many([key(9), key(1)], rows([1, 2, 3])),
         InvalidVectorError),
    Case("put_many-nan-last", lambda c: c.put_many([key(0), key(9), key(8)], _nan_at(2, 3)),
         InvalidVectorError),
    Case("put_many-inf-first",
         lambda c: c.put_many([key(9), key(1), key(8)], np.where(_nan_at(0, 0) > 0, 1, np.inf)),
         InvalidVectorError),
    Case("put_many-dim", lambda c: c.put_many([key(9), key(1)], rows([1, 2], DIM + 2)),
         DimensionMismatchError),
    Case("put_many-1d", lambda c: c.put_many([key(9)], vec(1)), InvalidVectorError),
    Case("put_many-ragged", lambda c: c.put_many([key(9), key(8)], [[1, 2, 3, 4], [1, 2]]),
         InvalidVectorError),
    Case("put_many-strings", lambda c: c.put_many([key(9)], [["a"] * DIM]), VectorTypeError),
    Case("put_many-none", lambda c: c.put_many([key(9)], None), VectorTypeError),
    # lookups and removal: nothing counted, no recency moved
    Case("get-key", lambda c: c.get("hash-1"), KeyTypeError),
    Case("get_many-key", lambda c: c.get_many([key(1), key(9), 3]), KeyTypeError),
    Case("get_many-keys-int", lambda c: c.get_many(5), KeyTypeError),
    Case("get_many-out-shape", lambda c: c.get_many([key(1), key(9)], out=np.zeros((3, DIM),
         np.float32)), ArgumentValueError),
    Case("get_many-out-dtype", lambda c: c.get_many([key(1)], out=np.zeros((1, DIM))),
         ArgumentTypeError),
    Case("get_many-out-readonly", lambda c: c.get_many([key(1)], out=_readonly((1, DIM))),
         ArgumentTypeError),
    Case("remove-key", lambda c: c.remove("hash-1"), KeyTypeError),
    Case("in-key", lambda c: "hash-1" in c, KeyTypeError),
    # get_or_compute: its arguments first; then what compute answers, after the lookup
    Case("get_or_compute-key", lambda c: c.get_or_compute([key(1), None], _answer(rows([1]))),
         KeyTypeError),
    Case("get_or_compute-keys-int", lambda c: c.get_or_compute(5, _answer(rows([1]))),
         KeyTypeError),
    Case("get_or_compute-compute", lambda c: c.get_or_compute([key(9)], 5), ArgumentTypeError),
    Case("get_or_compute-timeout",
         lambda c: c.get_or_compute([key(9)], _answer(rows([9])), timeout=-1), ArgumentValueError),
    Case("get_or_compute-timeout-str",
         lambda c: c.get_or_compute([key(9)], _answer(rows([9])), timeout="1"), ArgumentTypeError),
    Case("get_or_compute-answer-dim",
         lambda c: c.get_or_compute([key(1), key(9)], _answer(rows([9], DIM + 1))),
         DimensionMismatchError, (1, 1)),
    Case("get_or_compute-answer-rows",
         lambda c: c.get_or_compute([key(9), key(1), key(8)], _answer(rows([9, 8, 7]))),
         InvalidVectorError, (1, 2)),
    Case("get_or_compute-answer-nan",
         lambda c: c.get_or_compute([key(9), key(8)], _answer(_nan_at(1, 0, 2))),
         InvalidVectorError, (0, 2)),
    Case("get_or_compute-answer-none",
         lambda c: c.get_or_compute([key(9), key(2)], _answer(None)), VectorTypeError, (1, 1)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_rejected_call_leaves_the_cache_exactly_as_it_was(
    kind: Kind, make: Make, case: Case, request: pytest.FixtureRequest
) -> None:
    if case.name in kind.gaps:
        request.applymarker(pytest.mark.xfail(strict=True, reason="a known gap of this kind"))
    c = make(dim=DIM)
    c.put_many(PRESENT, rows(range(5)))
    c.get(key(0))  # some statistics to keep
    c.get(key("absent"))
    before = observe(c, [*PRESENT, key(8), key(9)])
    with pytest.raises(case.error) as raised:
        case.call(c)
    assert type(raised.value) is case.error
    hits, misses = case.looked_up
    assert_unchanged(c, before, hits=hits, misses=misses, tier=kind.tier_counts(asked=misses))


@pytest.mark.parametrize("form", ["list", "tuple", "iterator", "generator"])
def test_a_rejected_put_many_stores_nothing_anywhere(kind: Kind, make: Make, form: str) -> None:
    c = make()  # no fixed dimension: the batch's first row sets it for the batch
    matrix = rows(range(3), 8)
    matrix[2, 7] = np.inf
    with pytest.raises(InvalidVectorError):
        c.put_many(FORMS[form]([key(0), key(1), key(2)]), matrix)
    assert len(c) == 0 and c.shared() == {}
    assert c.info().puts == 0
    matrix, found = c.get_many([key(0), key(1), key(2)])
    assert not found.any()
    assert c.info().tier_misses == kind.tier_counts(asked=3)["tier_misses"]


class Unstable:
    """An array-like whose conversion gives another vector each time."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.conversions = 0

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self.conversions += 1
        return np.full(self.shape, float(self.conversions), dtype=dtype or np.float64)


def _stored_everywhere(kind: Kind, c: Driver, keys: list[CacheKey]) -> np.ndarray:
    """What `keys` read in-process, checking that the rest of the cache's tiers
    (read once the in-process cache is cleared) hold the same rows."""
    here, found = c.get_many(keys)
    assert found.all()
    c.clear()
    for k, row in zip(keys, here):
        assert_answer(c.get(k), kind.forgotten(row))
    return here


def test_a_put_stores_one_conversion_everywhere(kind: Kind, make: Make) -> None:
    c = make(dim=DIM)
    c.put(key(1), Unstable((DIM,)))
    here = _stored_everywhere(kind, c, [key(1)])
    assert len(set(here[0].tolist())) == 1  # one conversion's values


def test_a_put_many_stores_one_conversion_everywhere(kind: Kind, make: Make) -> None:
    c = make(dim=DIM)
    c.put_many([key(1), key(2)], Unstable((2, DIM)))
    here = _stored_everywhere(kind, c, [key(1), key(2)])
    assert len(set(here.ravel().tolist())) == 1


def test_a_computed_answer_is_stored_as_returned_everywhere(kind: Kind, make: Make) -> None:
    c = make(dim=DIM)
    result = c.get_or_compute([key(1), key(2)], lambda keys: Unstable((len(keys), DIM)))
    here = _stored_everywhere(kind, c, [key(1), key(2)])
    np.testing.assert_array_equal(here, result)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.put(key(9), vec(9, 2100)),  # more than the budget in every storage
        lambda c: c.put_many([key(8), key(9)], rows([8, 9], 2100)),
        lambda c: c.get_or_compute([key(1), key(9)], lambda keys: rows([9], 2100)),
    ],
    ids=["put", "put_many", "get_or_compute"],
)
def test_an_entry_larger_than_the_budget_goes_nowhere(
    kind: Kind, make: Make, call: Callable[[Driver], Any]
) -> None:
    if kind.fixed_dim:  # no entry of its one dimension can outgrow the budget: refused at once
        with pytest.raises(EntryTooLargeError):
            make(max_memory_mb=2048 / 2**20, dim=4096)
        return
    c = make(max_memory_mb=2048 / 2**20)  # room for a few small entries only
    c.put(key(1), vec(1, 8))
    before = observe(c, [key(1), key(8), key(9)])
    with pytest.raises(EntryTooLargeError):
        call(c)
    after = observe(c, before.stored)
    assert (after.length, after.shared) == (before.length, before.shared)
    assert after.stored == before.stored
    assert after.info["puts"] == before.info["puts"]
