"""A pure-Python model of the core's W-TinyLFU policy (embcache/core/policy.pxi and
core/sketch.pxi), for the stateful tests: it must predict every eviction exactly, so
it mirrors the C step for step, down to the sketch's hash and the hill
climber's floating point.

The sketch hashes a key from the low 32 bits of its index hash, the digest
mixed with the process key (embcache/core/keyhash.h), which
embcache._core.hash_key() and key_hash() reproduce (the key never leaves the
process, and the test runs in that process).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey
from embcache._core import hash_key, key_hash

if TYPE_CHECKING:
    from model import ModelCache

WINDOW, PROBATION, PROTECTED = 0, 1, 2
SLOT_BYTES = 4
BLOCK_WORDS = 8
PERIOD_PER_ENTRY = 10
CLIMB_RESTART = 0.05
CLIMB_STEP = 0.0625
CLIMB_DECAY = 0.98
M64 = (1 << 64) - 1


def key_bits(k: CacheKey) -> int:
    """The 30 bits the policy keeps per slot: low 32 bits of the index hash >> 2."""
    h = key_hash(hash_key(), k.digest)
    return (h & 0xFFFFFFFF) >> 2


def spread(bits: int) -> int:
    z = (bits + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def capacity_for(max_entries: int, budget: int, dim: int | None) -> int:
    fit = budget // ((dim or 1) * 4 + ENTRY_OVERHEAD_BYTES + SLOT_BYTES)
    return max(1, min(max_entries, fit))


def sketch_words_for(capacity: int, budget: int) -> int:
    words = BLOCK_WORDS
    while words < capacity:
        words *= 2
    while words > BLOCK_WORDS and words * 8 > budget // 8:
        words //= 2
    return words


class Sketch:
    """Count-min sketch of 4-bit counters, 16 per 64-bit word, one block per key."""

    def __init__(self, words: int, period: int) -> None:
        self.words = [0] * words
        self.period = period
        self.added = 0

    def _cells(self, bits: int) -> list[tuple[int, int]]:
        z = spread(bits)
        base = (z & (len(self.words) - 1)) & ~(BLOCK_WORDS - 1)
        return [(base + 2 * i + ((z >> (32 + i)) & 1), ((z >> (36 + 4 * i)) & 15) * 4)
                for i in range(4)]

    def frequency(self, bits: int) -> int:
        return min((self.words[w] >> sh) & 15 for w, sh in self._cells(bits))

    def increment(self, bits: int) -> None:
        added = False
        for w, sh in self._cells(bits):
            if (self.words[w] >> sh) & 15 != 15:
                self.words[w] += 1 << sh
                added = True
        if added:
            self.added += 1
            if self.added >= self.period:
                self.words = [(w >> 1) & 0x7777777777777777 for w in self.words]
                self.added >>= 1


class TinyLfuPolicy:
    """W-TinyLFU: window, probation and protected segments (ordered dicts, oldest
    first), a frequency sketch and Caffeine's hill climber on the window's share."""

    name = "tinylfu"
    entry_bytes = SLOT_BYTES

    def __init__(self, max_entries: int, budget: int, dim: int | None = None) -> None:
        self.capacity = capacity_for(max_entries, budget, dim)
        words = sketch_words_for(self.capacity, budget)
        self.fixed_bytes = words * 8
        self.period = PERIOD_PER_ENTRY * self.capacity
        self.sketch = Sketch(words, self.period)
        self.segments: list[OrderedDict[Hashable, None]] = [OrderedDict() for _ in range(3)]
        self.segment: dict[Hashable, int] = {}
        self.bits: dict[Hashable, int] = {}
        self.rejections = 0
        self.reset()

    # -- shares and the climber ----------------------------------------------------------

    def reset(self) -> None:
        for seg in self.segments:
            seg.clear()
        self.segment.clear()
        self.sketch.words = [0] * len(self.sketch.words)
        self.sketch.added = 0
        self.hits = self.misses = 0
        self.previous_rate = 0.0
        self.step = -CLIMB_STEP * self.capacity
        self.set_window(max(1, self.capacity // 100))

    def set_window(self, window_max: int) -> None:
        self.window_max = min(max(window_max, 1), max(1, self.capacity - 1))
        self.protected_max = max(0, (self.capacity - self.window_max) * 4 // 5)

    def _move(self, k: Hashable, to: int) -> None:
        del self.segments[self.segment[k]][k]
        self.segments[to][k] = None
        self.segment[k] = to

    def _oldest(self, seg: int) -> Hashable:
        return next(iter(self.segments[seg]))

    def _rebalance(self) -> None:
        while len(self.segments[PROTECTED]) > self.protected_max:
            self._move(self._oldest(PROTECTED), PROBATION)
        while len(self.segments[WINDOW]) > self.window_max:
            self._move(self._oldest(WINDOW), PROBATION)

    def _climb(self) -> None:
        sample = self.hits + self.misses
        if sample < self.period:
            return
        rate = self.hits / sample
        change = rate - self.previous_rate
        amount = self.step if change >= 0 else -self.step
        if abs(change) >= CLIMB_RESTART:
            self.step = CLIMB_STEP * self.capacity * (1.0 if amount >= 0 else -1.0)
        else:
            self.step = CLIMB_DECAY * amount
        self.previous_rate = rate
        self.hits = self.misses = 0
        self.set_window(self.window_max + int(amount))
        self._rebalance()

    # -- the hooks -----------------------------------------------------------------------

    def on_hit(self, k: Hashable) -> None:
        self.sketch.increment(self.bits[k])
        seg = self.segment[k]
        if seg == PROBATION:
            self._move(k, PROTECTED)
            if len(self.segments[PROTECTED]) > self.protected_max:
                self._move(self._oldest(PROTECTED), PROBATION)
        else:
            self.segments[seg].move_to_end(k)
        self.hits += 1
        self._climb()

    def on_miss(self, k: Hashable) -> None:
        assert isinstance(k, CacheKey)
        self.sketch.increment(key_bits(k))
        self.misses += 1
        self._climb()

    def on_insert(self, k: Hashable) -> None:
        assert isinstance(k, CacheKey)
        self.bits[k] = key_bits(k)
        self.segments[WINDOW][k] = None
        self.segment[k] = WINDOW
        if len(self.segments[WINDOW]) > self.window_max:
            self._move(self._oldest(WINDOW), PROBATION)

    def on_remove(self, k: Hashable) -> None:
        del self.segments[self.segment.pop(k)][k]

    def _main_lru(self) -> Hashable:
        for seg in (PROBATION, PROTECTED, WINDOW):
            if self.segments[seg]:
                return self._oldest(seg)
        raise AssertionError("victim of an empty cache")

    def victim(self, cache: ModelCache, need: int) -> Hashable:
        window = self.segments[WINDOW]
        if not window or len(window) < self.window_max:
            return self._main_lru()
        candidate = self._oldest(WINDOW)
        count_short = len(cache.vectors) + 1 - cache.max_entries
        bytes_short = cache.used_bytes + need - cache.budget_bytes
        wanted = self.sketch.frequency(self.bits[candidate])
        first = None
        walk = list(self.segments[PROBATION]) + list(self.segments[PROTECTED])
        for v in walk:
            if count_short <= 0 and bytes_short <= 0:
                break
            if self.sketch.frequency(self.bits[v]) >= wanted:
                self.rejections += 1
                return candidate
            if first is None:
                first = v
            count_short -= 1
            bytes_short -= cache.entry_bytes(len(cache.vectors[v]))
        if count_short > 0 or bytes_short > 0:
            return candidate        # the main region cannot make room
        assert first is not None
        return first
