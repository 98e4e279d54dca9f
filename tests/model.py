"""A tiny pure-Python model of the cache contract, for the stateful tests.

``writes`` (oldest write first, which with one TTL for the whole cache and a
monotonic clock is also expiry order) and the policy carry the whole state. The
policy is an object with the core's hooks (on_hit / on_insert / on_remove /
on_miss / victim): LruPolicy here, one ordered dict in recency order;
TinyLfuPolicy in tests/model_tinylfu.py. Byte accounting uses
ENTRY_OVERHEAD_BYTES plus the policy's bytes exactly as the contract states.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embcache import ENTRY_OVERHEAD_BYTES


@dataclass
class ModelStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    puts: int = 0
    overwrites: int = 0
    removals: int = 0


class LruPolicy:
    """LRU: ``recency`` holds keys least recently used first."""

    name = "lru"
    entry_bytes = 0
    fixed_bytes = 0
    rejections = 0

    def __init__(self) -> None:
        self.recency: OrderedDict[Hashable, None] = OrderedDict()

    def reset(self) -> None:
        self.recency.clear()

    def on_hit(self, k: Hashable) -> None:
        self.recency.move_to_end(k)

    def on_insert(self, k: Hashable) -> None:
        self.recency[k] = None

    def on_remove(self, k: Hashable) -> None:
        del self.recency[k]

    def on_miss(self, k: Hashable) -> None:
        pass

    def victim(self, cache: ModelCache, need: int) -> Hashable:
        return next(iter(self.recency))


@dataclass
class ModelCache:
    max_entries: int
    budget_bytes: int
    ttl: float | None = None
    policy: Any = field(default_factory=LruPolicy)
    stats: ModelStats = field(default_factory=ModelStats)
    vectors: dict[Hashable, np.ndarray] = field(default_factory=dict)
    expires_at: dict[Hashable, float] = field(default_factory=dict)
    writes: OrderedDict[Hashable, None] = field(default_factory=OrderedDict)
    used_bytes: int = 0

    def __post_init__(self) -> None:
        self.used_bytes = self.policy.fixed_bytes

    # -- helpers ---------------------------------------------------------------------

    def entry_bytes(self, dim: int) -> int:
        return dim * 4 + ENTRY_OVERHEAD_BYTES + self.policy.entry_bytes

    def _expired(self, k: Hashable, now: float) -> bool:
        return self.ttl is not None and self.expires_at[k] <= now

    def _discard(self, k: Hashable) -> None:
        self.used_bytes -= self.entry_bytes(len(self.vectors[k]))
        self.policy.on_remove(k)
        del self.vectors[k], self.expires_at[k], self.writes[k]

    def _write(self, k: Hashable, vector: np.ndarray, now: float) -> None:
        if k in self.vectors:
            self.policy.on_hit(k)
        else:
            self.policy.on_insert(k)
        self.vectors[k] = vector.copy()
        self.expires_at[k] = now + self.ttl if self.ttl is not None else float("inf")
        self.writes[k] = None
        self.writes.move_to_end(k)

    def _purge(self, now: float) -> None:
        while self.writes:
            head = next(iter(self.writes))
            if not self._expired(head, now):
                break
            self.stats.expirations += 1
            self._discard(head)

    def any_expired(self, now: float) -> bool:
        return any(self._expired(k, now) for k in self.vectors)

    # -- the contract ----------------------------------------------------------------

    def put(self, k: Hashable, vector: np.ndarray, now: float) -> None:
        dim = len(vector)
        need = self.entry_bytes(dim)
        if k in self.vectors:
            if self._expired(k, now):
                self.stats.expirations += 1
            else:
                self.stats.overwrites += 1
            if len(self.vectors[k]) == dim:
                # rewritten in place: no room to make
                self._write(k, vector, now)
                self.stats.puts += 1
                return
            self._discard(k)
        while len(self.vectors) >= self.max_entries or self.used_bytes + need > self.budget_bytes:
            head = next(iter(self.writes))
            victim = head if self._expired(head, now) else self.policy.victim(self, need)
            if self._expired(victim, now):
                self.stats.expirations += 1
            else:
                self.stats.evictions += 1
            self._discard(victim)
        self._write(k, vector, now)
        self.used_bytes += need
        self.stats.puts += 1

    def get(self, k: Hashable, now: float) -> np.ndarray | None:
        if k not in self.vectors:
            self.stats.misses += 1
            self.policy.on_miss(k)
            return None
        if self._expired(k, now):
            self.stats.expirations += 1
            self.stats.misses += 1
            self._discard(k)
            self.policy.on_miss(k)
            return None
        self.stats.hits += 1
        self.policy.on_hit(k)
        return self.vectors[k].copy()

    def remove(self, k: Hashable, now: float) -> bool:
        if k not in self.vectors:
            return False
        if self._expired(k, now):
            self.stats.expirations += 1
            self._discard(k)
            return False
        self.stats.removals += 1
        self._discard(k)
        return True

    def peek(self, k: Hashable, now: float) -> np.ndarray | None:
        """The live vector of `k`, changing nothing (a batch deciding its dimension)."""
        return self.vectors[k] if self.contains(k, now) else None

    def contains(self, k: Hashable, now: float) -> bool:
        return k in self.vectors and not self._expired(k, now)

    def clear(self) -> None:
        for k in list(self.vectors):
            self._discard(k)
        self.policy.reset()
        self.used_bytes = self.policy.fixed_bytes

    def len(self, now: float) -> int:
        self._purge(now)
        return len(self.vectors)

    def info(self, now: float) -> dict[str, object]:
        """The CacheInfo fields the model predicts (reclaims expired entries first,
        as get_cache_info does)."""
        self._purge(now)
        lookups = self.stats.hits + self.stats.misses
        return {
            "size": len(self.vectors),
            "memory_usage_bytes": self.used_bytes,
            "memory_usage_mb": self.used_bytes / 2**20,
            "hits": self.stats.hits,
            "misses": self.stats.misses,
            "hit_rate": self.stats.hits / lookups if lookups else 0.0,
            "evictions": self.stats.evictions,
            "expirations": self.stats.expirations,
            "puts": self.stats.puts,
            "overwrites": self.stats.overwrites,
            "removals": self.stats.removals,
            "dims": tuple(sorted({len(v) for v in self.vectors.values()})),
            "entry_overhead_bytes": ENTRY_OVERHEAD_BYTES + self.policy.entry_bytes,
            "policy": self.policy.name,
            "admission_rejections": self.policy.rejections,
            "policy_bytes": self.policy.fixed_bytes,
        }
