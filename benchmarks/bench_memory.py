"""Memory and hit rate: ``track_`` benchmarks (a value, not a time) and
``peakmem_`` (the process's peak resident set size during the call).

Bytes per entry beyond the payload, at dim 768 with 10k entries:

* embcache, from ``get_cache_info()``: ``memory_usage_bytes / size - dim * 4``
  (the accounted metadata per entry; EmbcacheAllocated reports the bytes the
  cache actually holds for slabs and tables, per entry, minus the payload);
* each peer, from tracemalloc: the bytes traced while a new peer is filled with
  10k entries, per entry, minus ``dim * 4``. Keys are created inside the traced
  region and only the cache keeps them, so a peer is charged for the key object
  and its strings it holds (embcache keeps only a 16-byte fingerprint), for the
  ndarray header of every stored copy, and for its table. embcache's C
  allocations are invisible to tracemalloc, hence info for embcache. So are
  cachebox's (its hash table is Rust-allocated): for cachebox the figure is a
  lower bound (key, ndarray header; not its table).

Hit rates (unit "ratio") come from a read-through loop (get; on a miss, put) of
200k accesses on a 1000-entry cache, deterministic (fixed seed): a Zipf stream
(s = 1.0 over 10k keys) and a scan-heavy stream (the same Zipf traffic with a
2000-key sequential scan of one-off keys after every 8000 accesses). Every peer
is an LRU, so today all four must agree; a scan-resistant policy will show here.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from embcache import SyncEmbeddingCache

from ._util import PEER_NAMES, SEED, make_vector, require_peer, sha_key
from .common.peers import make_peer

DIM = 768
ENTRIES = 10_000


def _new_cache(peer, capacity, dim=DIM):
    if peer == "embcache":
        return SyncEmbeddingCache(capacity, None, 4096, dim=dim)
    return make_peer(peer, capacity)


class BytesPerEntry:
    """Metadata bytes per entry beyond the dim * 4 payload (dim 768, 10k entries)."""

    params = [PEER_NAMES]
    param_names = ["peer"]
    unit = "bytes"

    def setup(self, peer):
        require_peer(peer)
        self.vector = make_vector(DIM)

    def track_overhead(self, peer):
        if peer == "embcache":
            cache = _new_cache(peer, ENTRIES)
            for i in range(ENTRIES):
                cache.put(sha_key(i), self.vector)
            info = cache.get_cache_info()
            return info.memory_usage_bytes / info.size - DIM * 4
        _new_cache(peer, 1).put(sha_key(-1), self.vector)  # imports stay out of the trace
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            cache = _new_cache(peer, ENTRIES)
            for i in range(ENTRIES):
                cache.put(sha_key(i), self.vector)
            traced = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(cache) == ENTRIES
        return traced / ENTRIES - DIM * 4


class EmbcacheAllocated:
    """embcache's allocated bytes (slab + entry table + index) per entry beyond the
    payload, for a cache of exactly 10k entries at dim 768, filled."""

    unit = "bytes"

    def track_allocated_overhead(self):
        cache = SyncEmbeddingCache(ENTRIES, None, 4096, dim=DIM)
        vector = make_vector(DIM)
        for i in range(ENTRIES):
            cache.put(sha_key(i), vector)
        info = cache.get_cache_info()
        return info.allocated_bytes / info.size - DIM * 4


def _zipf_ranks(rng, n, universe, s=1.0):
    p = 1.0 / np.arange(1, universe + 1) ** s
    return rng.choice(universe, size=n, p=p / p.sum())


def _stream(kind, n=200_000, universe=10_000):
    rng = np.random.default_rng(SEED)
    hot = rng.permutation(universe)[_zipf_ranks(rng, n, universe)]  # rank -> key id
    if kind == "zipf":
        return hot
    out, scan_id, pos = [], 1_000_000, 0
    while pos < n:
        out.append(hot[pos : pos + 8000])
        out.append(np.arange(scan_id, scan_id + 2000))
        scan_id += 2000
        pos += 8000
    return np.concatenate(out)


class HitRate:
    """Hit rate of a 1000-entry cache under a read-through loop (see module doc)."""

    params = [PEER_NAMES, ["zipf", "scan"]]
    param_names = ["peer", "stream"]
    unit = "ratio"
    timeout = 120

    def setup(self, peer, stream):
        require_peer(peer)
        ids = _stream(stream)
        keys = {i: sha_key(i) for i in np.unique(ids).tolist()}
        self.keys = [keys[i] for i in ids.tolist()]
        self.vector = make_vector(8)

    def track_hit_rate(self, peer, stream):
        cache = _new_cache(peer, 1000, dim=8)
        get, put, vector = cache.get, cache.put, self.vector
        hits = 0
        for key in self.keys:
            if get(key) is None:
                put(key, vector)
            else:
                hits += 1
        return hits / len(self.keys)


class PeakMemFill:
    """Peak RSS of the process while a new cache is filled with 10k x 768 float32
    (30 MB of payload) under new SHA-256 keys; the baseline (interpreter, numpy,
    embcache) is included and the same for all."""

    params = [PEER_NAMES]
    param_names = ["peer"]

    def setup(self, peer):
        require_peer(peer)
        self.vector = make_vector(DIM)

    def peakmem_fill(self, peer):
        cache = _new_cache(peer, ENTRIES)
        for i in range(ENTRIES):
            cache.put(sha_key(i), self.vector)
