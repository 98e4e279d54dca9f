"""The core's own cost model: eviction and expiry churn, scaling with entry
count, what ``await`` adds, and CacheKey creation.

Timing (see _util.py): every ``time_`` call performs 1000 operations and asv
reports seconds **per operation** (``timer = per_op_timer``). Setup runs before
every call, untimed; churn benchmarks use it to make the next 1000 never-used
keys, so every timed put is a new key into a full cache, whatever the number of
calls. The filled caches are built once per process (``memo``).
"""

from __future__ import annotations

import hashlib
import itertools
from functools import partial

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, EmbeddingCache, SyncEmbeddingCache

from ._util import MODEL, OPS, SEED, PerOp, make_key, make_keys, make_vector, memo, shuffled

DIM = 768
CHURN_ENTRIES = 10_000


class _Churn(PerOp):
    """Shared: a full cache (built once) and a fresh batch of new keys per call."""

    def _fresh_keys(self, state):
        start = state["next_id"]
        state["next_id"] += OPS
        self.keys = make_keys(OPS, start=start)

    def _fill(self, cache, vector, n):
        for key in make_keys(n):
            cache.put(key, vector)
        return {"cache": cache, "vector": vector, "next_id": n}

    def _put_all(self):
        put, vector = self.cache.put, self.vector
        for key in self.keys:
            put(key, vector)


class EvictionChurn(_Churn):
    """Put into a full cache: every put is a new key and evicts the LRU entry.
    bound=entries: full at max_entries=10k; bound=memory: full at a memory budget
    of exactly 10k entries of dim 768 (max_entries 1M)."""

    params = [["entries", "memory"]]
    param_names = ["bound"]

    def setup(self, bound):
        def build():
            if bound == "entries":
                cache = SyncEmbeddingCache(CHURN_ENTRIES, None, 1024, dim=DIM)
            else:
                budget = CHURN_ENTRIES * (DIM * 4 + ENTRY_OVERHEAD_BYTES) / 2**20
                cache = SyncEmbeddingCache(1_000_000, None, budget, dim=DIM)
            state = self._fill(cache, make_vector(DIM), CHURN_ENTRIES + OPS)
            assert len(cache) == CHURN_ENTRIES, len(cache)
            return state

        self.state = memo(("EvictionChurn", bound), build)
        self.cache, self.vector = self.state["cache"], self.state["vector"]
        self._fresh_keys(self.state)

    def time_put_evicting(self, bound):
        self._put_all()


class ExpiryChurn(_Churn):
    """Put into a full cache whose oldest entry has always expired: every put is
    a new key and reclaims one expired entry (expirations, no evictions).

    The clock is ``partial(next, itertools.count())``: each read advances it by
    one second, with a TTL of half the capacity in seconds, so by the time the
    cache is full again its oldest write is long expired. One clock read (a C
    call, ~40 ns) is part of every timed put, as it is with any user clock."""

    params = [[CHURN_ENTRIES]]
    param_names = ["entries"]

    def setup(self, entries):
        def build():
            clock = partial(next, itertools.count(0.0, 1.0))
            cache = SyncEmbeddingCache(entries, entries / 2, 1024, dim=DIM, clock=clock)
            state = self._fill(cache, make_vector(DIM), entries + OPS)
            before = cache.get_cache_info()
            for key in make_keys(OPS, start=entries + OPS):
                cache.put(key, state["vector"])
            after = cache.get_cache_info()
            assert after.evictions == before.evictions, "expiry churn evicted live entries"
            assert after.expirations >= before.expirations + OPS, (before, after)
            state["next_id"] = entries + 2 * OPS
            return state

        self.state = memo(("ExpiryChurn", entries), build)
        self.cache, self.vector = self.state["cache"], self.state["vector"]
        self._fresh_keys(self.state)

    def time_put_expiring(self, entries):
        self._put_all()


class _Scaling(_Churn):
    """Shared: a cache of `entries` entries at dim 64 (1M x 64 x 4 B = 256 MB of
    slab), built once per process."""

    params = [[10_000, 100_000, 1_000_000]]
    param_names = ["entries"]
    timeout = 180

    def _build_scaled(self, entries):
        def build():
            cache = SyncEmbeddingCache(entries, None, 4096, dim=64)
            state = self._fill(cache, make_vector(64), entries)
            assert len(cache) == entries
            # keys are values: make_key(i) equals the key that was put
            state["lookups"] = [
                make_key(int(i)) for i in _rng().choice(entries, size=OPS, replace=False)
            ]
            return state

        self.state = memo((type(self).__name__, entries), build)
        self.cache, self.vector = self.state["cache"], self.state["vector"]


class ScalingGet(_Scaling):
    """Get of a live key against entry count: 1000 keys drawn at random from all
    entries. The cost per operation must stay flat from 10k to 1M."""

    def setup(self, entries):
        self._build_scaled(entries)

    def time_get_hit(self, entries):
        get = self.cache.get
        for key in self.state["lookups"]:
            get(key)


class ScalingPut(_Scaling):
    """Put of a new key into the full cache (evicts the LRU entry) against entry
    count. The cost per operation must stay flat from 10k to 1M."""

    def setup(self, entries):
        self._build_scaled(entries)
        self._fresh_keys(self.state)

    def time_put_evicting(self, entries):
        self._put_all()


def _rng():
    import numpy as np

    return np.random.default_rng(SEED)


async def _await_gets(get, keys):
    for key in keys:
        await get(key)


def _sync_gets(get, keys):
    for key in keys:
        get(key)


class AwaitOverhead(PerOp):
    """``await cache.get(k)`` (EmbeddingCache) against ``cache.get(k)``
    (SyncEmbeddingCache), hits at dim 768 over 1000 keys in random order. The
    async loop runs inside one coroutine, driven with ``send(None)`` (what an
    event loop does for a coroutine that never suspends), so the difference is
    the cost of the awaitable wrapper alone, per operation."""

    params = [["sync", "async"]]
    param_names = ["api"]

    def setup(self, api):
        def build():
            cache = EmbeddingCache(OPS, None, 64, dim=DIM)
            vector = make_vector(DIM)
            for key in make_keys(OPS):
                cache.sync.put(key, vector)
            return cache, shuffled(make_keys(OPS))

        self.cache, self.keys = memo("AwaitOverhead", build)

    def time_get_hit(self, api):
        if api == "sync":
            _sync_gets(self.cache.sync.get, self.keys)
        else:
            coro = _await_gets(self.cache.get, self.keys)
            try:
                coro.send(None)
            except StopIteration:
                pass


class KeyCreation(PerOp):
    """Creating a CacheKey (its 128-bit fingerprint is computed at creation).
    fields: ``CacheKey(sha256_hex, model, chunk_id)`` from pre-built strings;
    from_text: ``CacheKey.from_text(text, model, chunk_id)``, 512-character texts
    (SHA-256 of the text included)."""

    params = [["fields", "from_text"]]
    param_names = ["how"]

    def setup(self, how):
        def build():
            texts = [(f"chunk {i} " * 64)[:512] for i in range(OPS)]
            hashes = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
            chunks = [f"chunk_{i % 100}" for i in range(OPS)]
            return texts, hashes, chunks

        self.texts, self.hashes, self.chunks = memo("KeyCreation", build)

    def time_create(self, how):
        if how == "fields":
            for h, c in zip(self.hashes, self.chunks):
                CacheKey(h, MODEL, c)
        else:
            from_text = CacheKey.from_text
            for t, c in zip(self.texts, self.chunks):
                from_text(t, MODEL, c)
