"""One get_or_compute call's bookkeeping: which input rows are misses, what the
owner of a flight does around its compute call, and the final assembly.

Nothing here knows about threads, tasks or the registry (embcache.flight.registry),
nor imports the core: the cache is used through its public methods, and the
core's PutBatch type comes in as ``batch_type`` (the registry has it from the
core that made it)::

    cache.get_many(keys) -> matrix, found -> Plan (the distinct misses, in order)
    Work(our claimed keys): re-read the ones stored meanwhile (stale lookup),
        compute(todo) -> Work.finish: cache.put_batch(todo, result).take()
        (the one conversion and validation pass) -> .store() -> our flight's rows
    Plan.assemble(): hits as looked up, misses from the flights' rows
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import numpy.typing as npt

from embcache.errors import ArgumentTypeError, ArgumentValueError, DimensionMismatchError

if TYPE_CHECKING:  # the core is the layer above: its types for the checker only
    from embcache._core import CacheKey
    from embcache.core.protocol import CoreCache, PutRows

__all__ = [
    "Compute",
    "Matrix",
    "Plan",
    "Work",
    "all_found",
    "check_compute",
    "distinct_misses",
    "store_one",
]

Matrix = npt.NDArray[np.float32]
Compute = Callable[[list["CacheKey"]], Any]
"""``compute(missing_keys)`` -> an (m, dim) array-like or a list of PutBatch made
by the same cache for exactly those keys, in order; or an awaitable of either."""


def all_found(found: npt.NDArray[np.bool_]) -> bool:
    # a numpy reduction costs ~0.6 us; a short list is cheaper to scan in Python
    return all(found.tolist()) if len(found) <= 32 else bool(found.all())


def check_compute(compute: object, what: str) -> None:
    if not callable(compute):
        raise ArgumentTypeError(
            f"{what} must be a callable taking a list of CacheKey, got {type(compute).__name__}"
        )


def distinct_misses(
    keys: Sequence[CacheKey], found: npt.NDArray[np.bool_]
) -> tuple[list[CacheKey], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """``(misses, positions, index)`` of a lookup of `keys` that answered
    `found`: `misses` are the distinct keys not found, in first-occurrence
    order; input position ``positions[i]`` takes the row of
    ``misses[index[i]]``."""
    positions = np.flatnonzero(~found)
    missed = [keys[p] for p in positions.tolist()]
    number = dict.fromkeys(missed)  # C loops: hashing, then the distinct keys in order
    misses = list(number)
    if len(misses) == len(missed):  # no key missed twice: the mapping is the identity
        return misses, positions, np.arange(len(missed), dtype=np.intp)
    number.update(zip(misses, range(len(misses))))
    index = np.fromiter(map(number.__getitem__, missed), np.intp, len(missed))
    return misses, positions, index


class Plan:
    """The misses of one get_or_compute call and where each one's row comes from.

    ``misses`` are the distinct missed keys in first-occurrence order; input
    position ``miss_pos[i]`` takes the row of ``misses[miss_index[i]]``.
    ``sources[j]`` is ``(rows, r)`` once row ``r`` of a settled flight's ``rows``
    holds ``misses[j]``.
    """

    __slots__ = ("matrix", "hit_dim", "misses", "miss_pos", "miss_index", "sources")

    def __init__(self, matrix: Matrix, found: npt.NDArray[np.bool_], keys: tuple[CacheKey, ...]):
        self.matrix = matrix
        self.hit_dim: int | None = int(matrix.shape[1]) if found.any() else None
        self.misses, self.miss_pos, self.miss_index = distinct_misses(keys, found)
        self.sources: list[tuple[Matrix, int] | None] = [None] * len(self.misses)

    def settled(self, ours: list[int], rows: Matrix) -> None:
        """Our own flight settled: row r of `rows` holds ``misses[ours[r]]``."""
        sources = self.sources
        for r, j in enumerate(ours):
            sources[j] = (rows, r)

    def assemble(self) -> Matrix:
        """The full (n, dim) matrix: hits as looked up, misses from their flights."""
        groups: dict[int, tuple[Matrix, list[int], list[int]]] = {}
        for j, source in enumerate(self.sources):
            assert source is not None, "every miss is settled before assembly"
            rows, r = source
            group = groups.setdefault(id(rows), (rows, [], []))
            group[1].append(j)
            group[2].append(r)
        dims = {int(rows.shape[1]) for rows, _, _ in groups.values()}
        if self.hit_dim is not None:
            dims.add(self.hit_dim)
        if len(dims) > 1:
            raise DimensionMismatchError(
                "get_or_compute: this batch mixes vectors of dimensions "
                f"{', '.join(map(str, sorted(dims)))} (computed concurrently by different calls)"
            )
        (dim,) = dims
        matrix = self.matrix
        if matrix.shape[1] != dim:  # every key missed and nothing fixed the dimension
            matrix = np.empty((matrix.shape[0], dim), dtype=np.float32)
        if len(groups) == 1:  # one flight holds every miss: gather straight from it
            ((rows, _, picks),) = groups.values()
            at = np.asarray(picks, dtype=np.intp)[self.miss_index]
            if len(at) == len(rows) and (at == np.arange(len(at))).all():
                if len(at) == len(matrix):
                    np.copyto(matrix, rows)
                else:
                    matrix[self.miss_pos] = rows
            else:
                matrix[self.miss_pos] = rows[at]
            return matrix
        distinct = np.empty((len(self.misses), dim), dtype=np.float32)
        for rows, numbers, picks in groups.values():
            distinct[numbers] = rows[picks]
        matrix[self.miss_pos] = distinct[self.miss_index]
        return matrix


def store_one(
    cache: CoreCache,
    batch_type: type[PutRows],
    key: CacheKey,
    hit_dim: int | None,
    result: Any,
    what: str,
) -> Matrix:
    """``Work(cache, batch_type, hit_dim, [key], False).finish(result, what)`` for one
    claimed key, its usual answers checked directly: one taken PutBatch of
    `cache` holding just `key` (CachedEmbedder's), or an array-like (converted
    and validated by ``cache.put_batch``). Stored; the (1, dim) read-only rows.
    Any other answer goes through Work, for its checks and messages."""
    if type(result) is list and result and isinstance(result[0], batch_type):
        batch = result[0]
        if not (
            len(result) == 1
            and batch.cache is cache
            and batch.n == 1
            and batch.taken == 1
            and batch.keys[0] is key
            and (hit_dim is None or batch.dim == hit_dim)
        ):
            return Work(cache, batch_type, hit_dim, [key], False).finish(result, what)
    else:
        batch = cache.put_batch((key,), result, what=f"{what}(missing)", dim=hit_dim)
        batch.take()
    batch.store()
    return batch.rows


class Work:
    """What a flight's owner does around its compute call (the same for thread and
    asyncio owners; only the call itself differs: awaited or not).

    ``todo`` are the claimed keys to compute; ``dim`` the dimension their rows
    must have (that of the hits, if any). With `stale`, another caller may have
    stored some of our keys after our lookup: those are read again first
    (``present``) and left out of ``todo``.
    """

    __slots__ = (
        "cache",
        "batch_type",
        "keys",
        "present",
        "todo",
        "dim",
        "computed",
        "computed_keys",
    )

    def __init__(
        self,
        cache: CoreCache,
        batch_type: type[PutRows],
        hit_dim: int | None,
        keys: list[CacheKey],
        stale: bool,
    ) -> None:
        self.cache = cache
        self.batch_type = batch_type
        self.keys = keys
        self.present: dict[int, Matrix] = {}
        self.todo: list[CacheKey] = keys
        self.dim = hit_dim
        self.computed: Matrix | None = None
        """After finish: the rows computed for ``computed_keys`` (None: none)."""
        self.computed_keys: list[CacheKey] = []
        if stale:
            self._fetch_settled()

    def adopt(self, matrix: Matrix, found: npt.NDArray[np.bool_]) -> None:
        """Take the rows a shared tier found for ``todo`` (row i for todo[i]
        where found[i]; embcache.tier.read.read_through has kept them in the
        cache): count them present and leave only the rest to compute."""
        if not found.any():
            return
        position = {k: r for r, k in enumerate(self.keys)}
        todo, hits = self.todo, found.tolist()
        for i in np.flatnonzero(found).tolist():
            self.present[position[todo[i]]] = matrix[i]
        self.dim = int(matrix.shape[1])
        self.todo = [k for k, hit in zip(todo, hits) if not hit]

    def _fetch_settled(self) -> None:
        """Read our keys stored meanwhile. Only reached after a race (or a retry);
        this second lookup counts its hits again in the cache's statistics."""
        cache, ours = self.cache, self.keys
        present = [r for r, k in enumerate(ours) if k in cache]
        if not present:
            return
        matrix, found = cache.get_many([ours[r] for r in present])
        for r, (row, hit) in zip(present, zip(matrix, found.tolist())):
            if hit:
                self.present[r] = row
        if self.present:
            dim = int(matrix.shape[1])
            if self.dim is not None and dim != self.dim:
                raise DimensionMismatchError(
                    f"get_or_compute: entries stored meanwhile have dim {dim}, "
                    f"the hits dim {self.dim}"
                )
            self.dim = dim
            self.todo = [k for r, k in enumerate(ours) if r not in self.present]

    def finish(self, result: Any, what: str) -> Matrix:
        """Validate and store compute's `result` for ``todo``; our flight's rows
        (private and read-only). Every batch is validated before any is stored."""
        computed: Matrix | None = None
        if self.todo:
            batches = self._batches(result, what)
            for batch in batches:
                batch.store()
            if len(batches) == 1:
                computed = batches[0].rows
            else:
                computed = np.concatenate([b.rows for b in batches])
                computed.flags.writeable = False
            self.computed = computed
            self.computed_keys = self.todo  # never changed in place, only replaced
            if not self.present:
                return computed
        return self._own_rows(computed)

    def _batches(self, result: Any, what: str) -> list[PutRows]:
        """compute's answer as taken PutBatch objects covering ``todo`` in order."""
        cache, todo = self.cache, self.todo
        batch_type = self.batch_type
        if not (type(result) is list and result and isinstance(result[0], batch_type)):
            batch = cache.put_batch(todo, result, what=f"{what}(missing)", dim=self.dim)
            batch.take()
            return [batch]
        # batches the caller's compute made itself (CachedEmbedder: one per model call)
        keys = tuple(todo)
        start = 0
        dim = self.dim
        for i, batch in enumerate(result):
            if not isinstance(batch, batch_type):
                raise ArgumentTypeError(
                    f"{what} returned a list of PutBatch whose item {i} is a {type(batch).__name__}"
                )
            if batch.cache is not cache:
                raise ArgumentValueError(f"{what} returned a PutBatch of another cache (item {i})")
            stop = start + batch.n
            if batch.keys != keys[start:stop]:
                raise ArgumentValueError(
                    f"{what} returned PutBatch objects that do not hold the missing keys "
                    f"in order (item {i})"
                )
            if batch.taken != batch.n:
                raise ArgumentValueError(
                    f"{what} returned a PutBatch with rows not taken yet (item {i}: "
                    f"{batch.taken} of {batch.n})"
                )
            if batch.n:
                if dim is not None and batch.dim != dim:
                    raise DimensionMismatchError(
                        f"{what} returned rows of dim {batch.dim} for missing keys "
                        f"[{start}, {stop}), but this batch needs dim {dim}"
                    )
                dim = batch.dim
            start = stop
        if start != len(keys):
            raise ArgumentValueError(
                f"{what} returned PutBatch objects for {start} keys, but {len(keys)} are missing"
            )
        return list(result)

    def _own_rows(self, computed: Matrix | None) -> Matrix:
        """The rows of our flight, in claim order: stored-meanwhile rows and computed ones."""
        present, n_ours = self.present, len(self.keys)
        if not present and computed is not None:
            return computed
        dim = next(iter(present.values())).shape[0] if present else 0
        rows = np.empty((n_ours, dim), dtype=np.float32)
        if present:
            rows[list(present)] = np.stack(list(present.values()))
        if computed is not None:
            rows[[r for r in range(n_ours) if r not in present]] = computed
        rows.flags.writeable = False
        return rows
