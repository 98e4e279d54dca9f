"""The same operations on embcache and on each peer LRU library, dim 768.

param ``peer``: "embcache" (``SyncEmbeddingCache(..., dim=768)``, dim fixed),
"embcache-default" (the cache as users build it, ``dim`` not given: the first
put fixes it) or a peer from embcache/cli/peers.py; a peer that is not
installed is skipped (NotImplementedError in setup). Peers store and return private copies, as a
correct embedding cache must.

The timed loops are ``LOOPS[peer]`` from embcache.cli.peers, the very
functions ``embcache check --compare`` times: for a peer, put is
``m[k] = v.copy()`` and get is ``x = m.get(k); x = None if x is None else
x.copy()``, written inline in the loop (no adapter method per operation); for
embcache, the bound ``put(k, v)`` and ``x = get(k)``. Both sides keep each
result until the next operation replaces it. Puts go over (key, vector) pairs.

Timing (see _util.py): 1000 operations per call, seconds reported **per
operation**; setup runs before every call, untimed. Caches hold 10k entries
(30 MB of vectors, well beyond L2). Lookups go in a fixed random order.

* PutNew: put of a key not in the cache, into a cache with room (setup empties
  the cache, whose memory the first fill already touched).
* PutFresh: put of 1000 new keys into a brand-new cache (made in setup,
  untimed), as a user's first puts go: embcache touches its slab pages for the
  first time; a peer's allocator reuses what the previous call freed.
* GetHit: get of a live key, returning a new array.
* GetMiss: get of a key never inserted.
* PutFull: put of a new key into a full cache: every put evicts the LRU entry.

The asv runner times one benchmark (all its samples) and then the next, so
contenders are not interleaved here; ``embcache check --compare`` interleaves
them per figure and is the harness the goal table of docs/performance.md comes from.
"""

from __future__ import annotations

from embcache import SyncEmbeddingCache

from ._util import (
    LOOPS,
    OPS,
    PEER_NAMES,
    Loops,
    PerOp,
    make_keys,
    make_vector,
    memo,
    peer_mapping,
    require_peer,
    shuffled,
)

DIM = 768
ENTRIES = 10_000
CONTENDERS = [*PEER_NAMES, "embcache-default"]
"""The ``peer`` parameter: PEER_NAMES (history kept) and the default embcache."""


def _is_embcache(peer):
    return peer.startswith("embcache")


def _new_cache(peer, capacity):
    """An empty cache of `peer` holding `capacity` entries of DIM."""
    if peer == "embcache":
        return SyncEmbeddingCache(capacity, None, 1024, dim=DIM)
    if peer == "embcache-default":
        return SyncEmbeddingCache(capacity, None, 1024)
    return peer_mapping(peer, capacity)


def _loops(peer) -> Loops:
    return LOOPS["embcache" if _is_embcache(peer) else peer]


def _filled(peer, n_keys):
    """A cache of ENTRIES capacity filled with keys 0..n_keys-1, and the vector;
    for n_keys < ENTRIES, OPS more keys are put and removed again, so the memory
    PutNew's puts will reuse has been touched."""
    vector = make_vector(DIM)
    cache = _new_cache(peer, ENTRIES)

    def store(key):  # not the timed loops: those are left to the timed calls
        if _is_embcache(peer):
            cache.put(key, vector)
        else:
            cache[key] = vector.copy()

    for key in make_keys(n_keys):
        store(key)
    if n_keys < ENTRIES:
        extra = make_keys(OPS, start=ENTRIES)
        for key in extra:
            store(key)
        for key in extra:
            if _is_embcache(peer):
                cache.remove(key)
            else:
                del cache[key]
    assert len(cache) == min(n_keys, ENTRIES)
    return cache, vector


class _PeerOps(PerOp):
    params = [CONTENDERS]
    param_names = ["peer"]

    def _puts(self, peer):
        _loops(peer).puts(self.cache, self.pairs)

    def _gets(self, peer):
        _loops(peer).gets(self.cache, self.keys)


class PutNew(_PeerOps):
    """Put of a new key into a cache with room (5k of 10k entries live)."""

    def setup(self, peer):
        require_peer(peer)
        self.cache, self.vector = memo(("PutNew", peer), lambda: _filled(peer, ENTRIES // 2))
        self.keys = memo("PutNew.keys", lambda: make_keys(OPS, start=ENTRIES))
        self.pairs = memo(("PutNew.pairs", peer), lambda: [(k, self.vector) for k in self.keys])
        # take back the previous call's keys (untimed): their memory is then
        # reused by the timed puts, already touched; a no-op on the first call
        if _is_embcache(peer):
            for key in self.keys:
                self.cache.remove(key)
        else:
            for key in self.keys:
                self.cache.pop(key, None)
        assert len(self.cache) == ENTRIES // 2, len(self.cache)

    def time_put_new(self, peer):
        self._puts(peer)


class PutFresh(_PeerOps):
    """Put of a new key into a brand-new cache of 10k entries (made untimed)."""

    def setup(self, peer):
        require_peer(peer)
        vector = memo("PutFresh.vector", lambda: make_vector(DIM))
        self.pairs = memo("PutFresh.pairs", lambda: [(k, vector) for k in make_keys(OPS)])
        self.cache = None  # the previous call's cache goes first
        self.cache = _new_cache(peer, ENTRIES)

    def time_put_fresh(self, peer):
        self._puts(peer)


class GetHit(_PeerOps):
    """Get of a live key (one of 10k), returning a new array."""

    def setup(self, peer):
        require_peer(peer)
        self.cache, self.vector = memo(("GetHit", peer), lambda: _filled(peer, ENTRIES))
        self.keys = memo("GetHit.keys", lambda: shuffled(make_keys(ENTRIES))[:OPS])

    def time_get_hit(self, peer):
        self._gets(peer)


class GetMiss(_PeerOps):
    """Get of a key never inserted, in a cache of 10k entries."""

    def setup(self, peer):
        require_peer(peer)
        self.cache, self.vector = memo(("GetMiss", peer), lambda: _filled(peer, ENTRIES))
        self.keys = memo("GetMiss.keys", lambda: shuffled(make_keys(OPS, start=10 * ENTRIES)))

    def time_get_miss(self, peer):
        self._gets(peer)


class PutFull(_PeerOps):
    """Put of a new key into a full cache: every put evicts one entry."""

    def setup(self, peer):
        require_peer(peer)
        self.state = memo(
            ("PutFull", peer),
            lambda: dict(
                zip(("cache", "vector"), _filled(peer, ENTRIES + OPS)), next_id=ENTRIES + OPS
            ),
        )
        self.cache, self.vector = self.state["cache"], self.state["vector"]
        self.keys = make_keys(OPS, start=self.state["next_id"])
        self.pairs = [(k, self.vector) for k in self.keys]
        self.state["next_id"] += OPS

    def time_put_full(self, peer):
        self._puts(peer)
