"""Eviction policies (docs/guide/policies.md): hit rates on reproducible traces, and what
W-TinyLFU costs per operation, beside LRU and beside theine (W-TinyLFU, PyPI).

``HitRate.track_hit_rate`` replays each trace of benchmarks/common/hitrate.py
(``get``, then ``put`` on a miss) through a cache of CACHE_SIZE entries and
reports the hit rate in percent; ``belady`` is the offline optimum of the same
trace. The hit-rate table of docs/performance.md is ``python -m
benchmarks.common.hitrate``, the same code.

``PolicyCost`` times the per-operation cost (see _util.py: 1000 operations per
call, seconds per operation) of a get hit, a put of a new key into a cache with
room, and a put of a new key into a full cache (every put evicts), dim 768,
10,000 entries, keys in random order. theine stores and returns private copies
(``set(k, v.copy())``, ``get`` then ``.copy()``), as embcache does.
"""

from __future__ import annotations

from embcache import SyncEmbeddingCache

from ._util import OPS, PerOp, make_keys, make_vector, memo, shuffled
from .common.hitrate import POLICIES, TRACES, hit_rate, theine_available, trace

DIM = 768
ENTRIES = 10_000
COST_POLICIES = ["lru", "tinylfu", "theine"]


class HitRate:
    """Hit rate (%) per trace and policy; deterministic, so measured once."""

    params = [list(TRACES), list(POLICIES)]
    param_names = ["trace", "policy"]
    unit = "percent"
    number = 1
    repeat = 1
    timeout = 120

    def setup(self, trace_name, policy):
        if policy == "theine" and not theine_available():
            raise NotImplementedError("theine is not installed")
        trace(trace_name)          # generated here, not in the tracked call

    def track_hit_rate(self, trace_name, policy):
        return 100.0 * hit_rate(trace_name, policy)


class _Theine:
    """theine's Cache behind the two calls the loops make, copying both ways."""

    def __init__(self, size):
        from theine import Cache

        self._cache = Cache(size)

    def put(self, key, vector):
        self._cache.set(key, vector.copy())

    def get(self, key):
        value, found = self._cache.get(key)
        return value.copy() if found else None


def _make(policy, size):
    if policy == "theine":
        if not theine_available():
            raise NotImplementedError("theine is not installed")
        return _Theine(size)
    return SyncEmbeddingCache(size, None, 4096, dim=DIM, policy=policy)


class PolicyCost(PerOp):
    """Per-op cost of get hit / put new / put into a full cache, per policy."""

    params = [COST_POLICIES]
    param_names = ["policy"]

    def setup(self, policy):
        def build():
            vector = make_vector(DIM)
            full = _make(policy, ENTRIES)          # put_full evicts from this one
            readable = _make(policy, ENTRIES)      # get_hit reads this one
            for key in make_keys(ENTRIES):
                full.put(key, vector)
                readable.put(key, vector)
            return {"full": full, "readable": readable, "vector": vector, "next_id": ENTRIES,
                    "hit_keys": shuffled(make_keys(ENTRIES))[:OPS],
                    "roomy": _make(policy, 100 * ENTRIES), "roomy_size": 0}

        state = self.state = memo(("PolicyCost", policy), build)
        self.vector = state["vector"]
        self.hit_keys = state["hit_keys"]
        self.new_keys = make_keys(OPS, start=state["next_id"])
        state["next_id"] += OPS
        if state["roomy_size"] >= 40 * ENTRIES:     # keep the roomy cache's memory bounded
            state["roomy"] = _make(policy, 100 * ENTRIES)
            state["roomy_size"] = 0
        state["roomy_size"] += OPS

    def time_get_hit(self, policy):
        get = self.state["readable"].get
        for key in self.hit_keys:
            x = get(key)
        return x

    def time_put_new(self, policy):
        put, vector = self.state["roomy"].put, self.vector
        for key in self.new_keys:
            put(key, vector)

    def time_put_full(self, policy):
        put, vector = self.state["full"].put, self.vector
        for key in self.new_keys:
            put(key, vector)
