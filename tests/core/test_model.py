"""Stateful property test: the real SyncEmbeddingCache and the pure-Python model
in tests/model.py receive the same random operations and must give the same
answers and the same statistics after every step, under both policies (LRU, and
W-TinyLFU against tests/model_tinylfu.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import MIB, FakeClock, by_profile
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from model import LruPolicy, ModelCache
from model_tinylfu import TinyLfuPolicy

from embcache import (
    ENTRY_OVERHEAD_BYTES,
    CacheKey,
    DimensionMismatchError,
    InvalidVectorError,
    SyncEmbeddingCache,
)

DIMS = [1, 3, 16, 64]
KEYS = [CacheKey(f"content-{i}", "model", None if i % 3 else f"chunk-{i}") for i in range(8)]
keys = st.sampled_from(KEYS)
# None: the next key in rotation, so puts keep bringing in keys and the bounds bind
put_keys = st.none() | keys
# time may pass before a put or a get, so expiry interleaves with everything else
pauses = st.sampled_from([0.0, 0.0, 0.0, 0.5, 1.0, 2.0])


def make_vector(dim: int, seed: int, form: str) -> tuple[object, np.ndarray]:
    """(what is passed to put, the float32 values expected back)."""
    expected = (np.arange(dim, dtype=np.float32) - dim / 2) * np.float32(0.5) + np.float32(seed)
    if form == "f32":
        return expected.copy(), expected
    if form == "f64":
        return expected.astype(np.float64), expected
    if form == "list":
        return expected.tolist(), expected
    if form == "reversed":
        return expected[::-1].copy()[::-1], expected
    if form == "strided":
        wide = np.zeros(dim * 3, dtype=np.float64)
        wide[::3] = expected
        return wide[::3], expected
    raise AssertionError(form)


forms = st.sampled_from(["f32", "f64", "list", "reversed", "strided"])


def make_policy(policy: str, max_entries: int, budget: int,
                dim: int | None) -> LruPolicy | TinyLfuPolicy:
    if policy == "lru":
        return LruPolicy()
    return TinyLfuPolicy(max_entries, budget, dim)


def smallest_budget(policy: str) -> int:
    """Bytes that hold one entry of the largest dimension the machine uses."""
    need = ENTRY_OVERHEAD_BYTES + max(DIMS) * 4
    if policy == "tinylfu":
        need += 4 + 64           # the policy word per entry, the smallest sketch
    return need


class CacheMachine(RuleBasedStateMachine):
    POLICY = "lru"
    cache: SyncEmbeddingCache
    model: ModelCache
    clock: FakeClock
    fixed_dim: int | None
    rotation: int

    @initialize(
        max_entries=st.integers(1, 5),
        extra_budget=st.integers(0, 650),
        ttl=st.sampled_from([None, 1.0, 2.5, 4.0, math.inf]),
        fixed_dim=st.sampled_from([None, None, None, 3, 16]),
    )
    def setup(self, max_entries: int, extra_budget: int, ttl: float | None,
              fixed_dim: int | None) -> None:
        budget = smallest_budget(self.POLICY) + extra_budget
        self.clock = FakeClock(100.0)
        self.rotation = 0
        self.fixed_dim = fixed_dim
        # budget / 2**20 is exact in binary, so the byte budget is exactly `budget`
        self.cache = SyncEmbeddingCache(max_entries, ttl, budget / MIB, dim=fixed_dim,
                                        clock=self.clock, policy=self.POLICY)
        assert self.cache.get_cache_info().memory_budget_bytes == budget
        model_ttl = None if ttl is None or ttl == math.inf else ttl
        self.model = ModelCache(max_entries, budget, model_ttl,
                                policy=make_policy(self.POLICY, max_entries, budget, fixed_dim))

    @property
    def now(self) -> float:
        return self.clock.now

    @rule(k=put_keys, dim=st.sampled_from(DIMS), seed=st.integers(-50, 50), form=forms,
          pause=pauses)
    def put(self, k: CacheKey | None, dim: int, seed: int, form: str, pause: float) -> None:
        self.clock.advance(pause)
        if k is None:
            self.rotation = (self.rotation + 1) % len(KEYS)
            k = KEYS[self.rotation]
        if self.fixed_dim is not None:
            dim = self.fixed_dim
        given, expected = make_vector(dim, seed, form)
        self.cache.put(k, given)
        self.model.put(k, expected, self.now)

    @rule(k=keys, dim=st.sampled_from(DIMS), bad=st.sampled_from(["nan", "inf", "2d", "empty"]))
    def put_rejected(self, k: CacheKey, dim: int, bad: str) -> None:
        vector = np.ones(dim, np.float32)
        if bad == "nan":
            vector[-1] = np.nan
        elif bad == "inf":
            vector[0] = -np.inf
        elif bad == "2d":
            vector = vector.reshape(1, dim)
        else:
            vector = vector[:0]
        with pytest.raises(InvalidVectorError):
            self.cache.put(k, vector)

    @precondition(lambda self: self.fixed_dim is not None)
    @rule(k=keys)
    def put_wrong_dim(self, k: CacheKey) -> None:
        assert self.fixed_dim is not None
        with pytest.raises(DimensionMismatchError):
            self.cache.put(k, np.ones(self.fixed_dim + 1, np.float32))

    @rule(k=keys, pause=pauses)
    def get(self, k: CacheKey, pause: float) -> None:
        self.clock.advance(pause)
        got = self.cache.get(k)
        want = self.model.get(k, self.now)
        if want is None:
            assert got is None
        else:
            assert got is not None
            assert got.dtype == np.float32 and got.shape == want.shape
            assert got.tobytes() == want.tobytes()
            got[:] = 12345.0          # the caller owns it: this must not reach the cache

    @rule(ks=st.lists(keys, min_size=1, max_size=4), dim=st.sampled_from(DIMS),
          seed=st.integers(-50, 50), cut=st.integers(0, 4), pause=pauses)
    def put_batch_in_slices(self, ks: list[CacheKey], dim: int, seed: int, cut: int,
                            pause: float) -> None:
        self.clock.advance(pause)
        if self.fixed_dim is not None:
            dim = self.fixed_dim
        rows = np.stack([make_vector(dim, seed + i, "f64")[1] for i in range(len(ks))])
        cut = min(cut, len(ks))
        batch = self.cache.put_batch(ks, rows.astype(np.float64))
        batch.take(0, cut)
        batch.take(cut)
        batch.store(0, cut)
        batch.store(cut)
        for k, row in zip(ks, rows):
            self.model.put(k, row, self.now)

    @rule(ks=st.lists(keys, min_size=1, max_size=4), cut=st.integers(0, 4), pause=pauses)
    def get_batch_in_slices(self, ks: list[CacheKey], cut: int, pause: float) -> None:
        self.clock.advance(pause)
        live = {k: self.model.peek(k, self.now) for k in ks}
        dims = {len(v) for v in live.values() if v is not None}
        if len(dims) > 1:
            with pytest.raises(DimensionMismatchError):
                self.cache.get_batch(ks)
            return
        batch = self.cache.get_batch(ks)
        cut = min(cut, len(ks))
        batch.read(0, cut)
        batch.read(cut)
        for i, k in enumerate(ks):
            want = self.model.get(k, self.now)
            assert bool(batch.found[i]) is (want is not None)
            if want is not None:
                assert batch.matrix[i].tobytes() == want.tobytes()

    @rule(k=keys)
    def remove(self, k: CacheKey) -> None:
        assert self.cache.remove(k) is self.model.remove(k, self.now)

    @rule()
    def length(self) -> None:
        assert len(self.cache) == self.model.len(self.now)

    @rule(dice=st.integers(0, 15))
    def clear(self, dice: int) -> None:
        if dice != 15:            # rare: a clear wipes the state the other rules build
            return
        self.cache.clear()
        self.model.clear()

    @rule()
    def info(self) -> None:
        self.compare_info()

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.5, 4.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def compare_info(self) -> None:
        info = dataclasses.asdict(self.cache.get_cache_info())
        want = self.model.info(self.now)
        got = {name: info[name] for name in want}
        assert got == want
        assert info["memory_usage_bytes"] <= info["memory_budget_bytes"]
        assert info["size"] <= info["max_entries"]

    @invariant()
    def structures_are_sound(self) -> None:
        self.cache._check_invariants()
        for k in KEYS:
            assert (k in self.cache) is self.model.contains(k, self.now)
        # the stats can be read without side effects only when nothing has expired
        # (get_cache_info reclaims expired entries, and so does the model)
        if not self.model.any_expired(self.now):
            self.compare_info()


CacheMachine.TestCase.settings = settings(
    max_examples=by_profile(default=200, ci=1000),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCacheMachine = CacheMachine.TestCase


class TinyLfuCacheMachine(CacheMachine):
    """The same machine with policy="tinylfu": the model predicts every segment
    move, sketch count and hill-climbing step, so every eviction and rejection."""

    POLICY = "tinylfu"


# half the examples of the LRU machine: each W-TinyLFU step costs the model more
TinyLfuCacheMachine.TestCase.settings = settings(
    CacheMachine.TestCase.settings, max_examples=by_profile(default=100, ci=500))
TestTinyLfuCacheMachine = TinyLfuCacheMachine.TestCase


@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
@pytest.mark.parametrize(
    ("seed", "ttl", "fixed_dim"),
    [(0, None, None), (1, 7.0, None), (2, None, 32), (3, 5.0, 32), (4, 3.0, None)],
)
def test_long_random_walk_matches_model(seed: int, ttl: float | None,
                                        fixed_dim: int | None, policy: str) -> None:
    """Bigger caches than the state machine reaches: the entry table, the index
    and the slabs grow past their first sizes while keys come and go."""
    rng = np.random.default_rng(seed)
    clock = FakeClock()
    max_entries, budget = 300, 120_000
    cache = SyncEmbeddingCache(max_entries, ttl, budget / MIB, dim=fixed_dim, clock=clock,
                               policy=policy)
    model = ModelCache(max_entries, budget, ttl,
                       policy=make_policy(policy, max_entries, budget, fixed_dim))
    walk_keys = [CacheKey(f"walk-{i}", "m", None if i % 2 else str(i)) for i in range(700)]
    dims = [fixed_dim] if fixed_dim else [4, 32, 200]
    n_steps = 60_000
    ops = rng.random(n_steps)
    ids = rng.integers(0, len(walk_keys), n_steps)
    for step in range(n_steps):
        k = walk_keys[int(ids[step])]
        r = ops[step]
        if r < 0.5:
            d = dims[step % len(dims)]
            v = np.full(d, step % 1000, np.float32)
            cache.put(k, v)
            model.put(k, v, clock.now)
        elif r < 0.85:
            got, want = cache.get(k), model.get(k, clock.now)
            assert (got is None) == (want is None)
            if want is not None:
                assert got is not None and got.tobytes() == want.tobytes()
        elif r < 0.95:
            assert cache.remove(k) is model.remove(k, clock.now)
        elif r < 0.99:
            clock.advance(0.1)
        else:
            assert (k in cache) is model.contains(k, clock.now)
        if step % 5000 == 0:
            cache._check_invariants()
            info = dataclasses.asdict(cache.get_cache_info())
            want_info = model.info(clock.now)
            assert {name: info[name] for name in want_info} == want_info
    cache._check_invariants()
    info = dataclasses.asdict(cache.get_cache_info())
    want_info = model.info(clock.now)
    assert {name: info[name] for name in want_info} == want_info
    assert info["evictions"] > 1000
    if ttl is not None:
        assert info["expirations"] > 100
