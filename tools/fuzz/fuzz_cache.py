"""Coverage-guided fuzz target for embcache's public synchronous API.

One input (a byte string) is decoded into cache limits and a sequence of
operations with hostile arguments, run against a ``SyncEmbeddingCache`` with a
fake clock.  Every call must either succeed or raise an ``EmbcacheError`` (or the
documented ``MemoryError`` / ``RuntimeError``, or the exception our own
``compute`` raised).  After every operation ``_check_invariants()`` runs, and a
small model checks every hit: a hit must equal the last vector stored under
that key, must not be expired, and must not be a key that was removed or
cleared.  Anything else raises ``AssertionError`` (a finding).

Run with atheris (coverage-guided, see tools/fuzz/README.md)::

    nice -n 19 python tools/fuzz/fuzz_cache.py -max_total_time=600 -timeout=20 tools/fuzz/corpus

or without atheris (plain random inputs)::

    python tools/fuzz/fuzz_cache.py --random --seconds 60 [--seed 1] [FILES...]

``test_one_input(data)`` is the one-input function; importing this module never
needs atheris.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from decimal import Decimal
from fractions import Fraction

try:  # atheris is optional: the harness runs (in random mode) without it
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

import numpy as np

if __name__ == "__main__" and atheris is not None and "--random" not in sys.argv:
    with atheris.instrument_imports(include=["embcache"]):
        import embcache
        from embcache import CacheKey, SyncEmbeddingCache
        from embcache._core import snapshot_checksum
        from embcache.errors import EmbcacheError, SnapshotError
else:
    import embcache  # noqa: F401
    from embcache import CacheKey, SyncEmbeddingCache
    from embcache._core import snapshot_checksum
    from embcache.errors import EmbcacheError, SnapshotError

MAX_OPS = 48

# Known findings are tolerated while they are open, unless EMBCACHE_FUZZ_STRICT=1, so that
# the harness keeps looking for new ones (tools/fuzz/README.md); none is open now.
STRICT = os.environ.get("EMBCACHE_FUZZ_STRICT", "") not in ("", "0")


class ComputeError(Exception):
    """What the fuzzer's own compute raises (allowed to propagate)."""


class ClockError(Exception):
    """What the fuzzer's own clock raises (allowed to propagate)."""


ALLOWED = (EmbcacheError, MemoryError, RuntimeError, ComputeError, ClockError)

UNKNOWN = object()  # model value: stored, but its exact value is not tracked


class Data:
    """A tiny deterministic decoder over the input bytes (zeros once exhausted).

    Used in both modes, so a corpus file means the same thing with and without
    atheris."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int_in(self, lo: int, hi: int) -> int:
        """An int in [lo, hi]."""
        span = hi - lo + 1
        if span <= 1:
            return lo
        v = 0
        nbytes = (span.bit_length() + 7) // 8
        for _ in range(nbytes):
            v = (v << 8) | self.byte()
        return lo + v % span

    def pick(self, seq):
        return seq[self.int_in(0, len(seq) - 1)]

    def bool(self) -> bool:
        return self.byte() & 1 == 1

    def text(self, maxlen: int = 6) -> str:
        n = self.int_in(0, maxlen)
        alphabet = "ab0_:é\u20ac\U0001f600"
        return "".join(self.pick(alphabet) for _ in range(n))


VALUE_PALETTE = [
    0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -3.25, 1e-45, 1e-300, 3.4028234e38, -3.4028234e38,
    123456.0, 7.0, 1e30, -1e-7,
]
HOSTILE_VALUES = [math.nan, math.inf, -math.inf, 3.5e38, 1e300, -1e39]


def gen_values(d: Data, n: int) -> list[float]:
    vals = []
    for _ in range(n):
        c = d.byte()
        if c < 6:
            vals.append(HOSTILE_VALUES[c])
        elif c < 40:
            vals.append(VALUE_PALETTE[c % len(VALUE_PALETTE)])
        else:
            vals.append(float(c - 128) / 8.0)
    return vals


def f32(vals) -> np.ndarray | None:
    """What a correct cache stores for `vals` (None: it must be rejected)."""
    with np.errstate(all="ignore"):
        a = np.asarray(vals, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            return None
        out = a.astype(np.float32)
    if not np.all(np.isfinite(out)):
        return None
    return out


def make_vector(d: Data, dim: int):
    """A hostile 1-D vector of (nominal) length `dim`: (object, expected), where
    expected is the float32 vector a correct cache stores, UNKNOWN if we cannot
    say exactly, or None when the input must be rejected."""
    vals = gen_values(d, dim)
    exp = f32(vals)
    kind = d.int_in(0, 31)
    if kind <= 3:
        return vals, exp
    if kind == 4:
        return tuple(vals), exp
    if kind == 5:
        return np.array(vals, dtype=np.float64), exp
    if kind == 6:
        return np.array(vals, dtype=np.float32) if exp is not None else np.array(vals), exp
    if kind == 7:  # byte-swapped
        dt = d.pick([">f8", ">f4", "<f8", ">i4"])
        with np.errstate(all="ignore"):
            a = np.array(vals, dtype=np.float64)
            if dt == ">i4":
                ints = np.nan_to_num(a, nan=0, posinf=0, neginf=0).clip(-1000, 1000)
                a = ints.astype(dt)
                return a, a.astype(np.float32)
            if dt == ">f4":
                b = a.astype(dt)
                return b, (f32(b) if np.all(np.isfinite(b)) else None)
            return a.astype(dt), exp
    if kind == 8:  # non-contiguous / negative strides
        a = np.repeat(np.array(vals, dtype=np.float64), 2)[::2]
        if d.bool():
            return a[::-1], (None if exp is None else exp[::-1].copy())
        return a, exp
    if kind == 9:  # read-only
        a = np.array(vals, dtype=np.float64)
        a.flags.writeable = False
        return a, exp
    if kind == 10:
        return np.matrix(vals), None
    if kind == 11:
        return np.ma.masked_array(vals, mask=[i % 2 == 0 for i in range(dim)]), None
    if kind == 12:
        return np.array(vals, dtype=object), UNKNOWN if exp is not None else None
    if kind == 13:
        return np.array([v > 0 for v in vals], dtype=bool), None
    if kind == 14:
        return np.array(vals, dtype=np.complex128), None
    if kind == 15:
        a = np.array(vals, dtype=np.float64)
        return (a.reshape(1, -1) if d.bool() else a.reshape(-1, 1)), (
            None if dim != 1 else UNKNOWN)
    if kind == 16:
        return np.float64(vals[0] if vals else 1.0), None
    if kind == 17:
        return d.pick([[], (), np.array([]), np.zeros((0,), np.float32)]), None
    if kind == 18:
        return (v for v in vals), UNKNOWN if exp is not None else None
    if kind == 19:
        return d.pick([None, "1.0,2.0", b"\x00\x00\x80?", {"a": 1.0}, 1.5, object()]), None
    if kind == 20:  # huge, zero-stride: no memory, but far beyond any budget here
        n = d.pick([2**20, 10**6, 10**7, 2**24, 2**25, 2**31 + 3])
        return np.broadcast_to(np.float32(0.5), (n,)), None
    if kind == 21:
        bad = d.pick(["x", None, [1.0], b"1", "2.5"])
        return vals + [bad], None
    if kind == 22:
        big = d.pick([2**130, -(2**200), 2**2000, 10**400])
        return [big] + vals, None
    if kind == 23:
        wrap = d.pick([Decimal, Fraction])
        try:
            items = [wrap(v) if math.isfinite(v) else v for v in vals]
        except (ValueError, OverflowError):
            return vals, exp
        return items, UNKNOWN if exp is not None else None
    if kind == 24:
        dt = d.pick([np.int8, np.int32, np.uint64, np.int64, np.uint8, np.float16])
        with np.errstate(all="ignore"):
            a = np.nan_to_num(np.array(vals, dtype=np.float64), nan=1, posinf=2, neginf=-2)
            if dt is np.float16:
                a = a.clip(-60000, 60000).astype(dt)
            else:
                info = np.iinfo(dt)
                a = a.clip(max(info.min, -(2**20)), min(info.max, 2**20)).astype(dt)
        return a, a.astype(np.float32)
    if kind == 25:
        import array
        a = array.array("f", [0.0] * dim)
        return memoryview(a) if d.bool() else a, np.zeros(dim, np.float32) if dim else None
    if kind == 26:
        dt = d.pick(["U3", "M8[s]", "m8[s]", "V4"])
        return np.zeros(max(dim, 1), dtype=dt), None
    if kind == 27:  # wrong dimension
        vals2 = gen_values(d, dim + d.int_in(1, 3))
        return np.array(vals2), f32(vals2)
    if kind == 28:  # huge integers stored in an int64 array
        a = np.full(dim, d.pick([2**62, -(2**63), 2**24 + 1]), dtype=np.int64)
        return a, UNKNOWN
    if kind == 29:
        class Sub(np.ndarray):
            pass
        return np.array(vals, dtype=np.float64).view(Sub), exp
    if kind == 30:  # Fortran-ordered 2-D column slice -> a strided 1-D view
        m = np.asfortranarray(np.array([vals, vals], dtype=np.float64))
        return m[1], exp
    with np.errstate(all="ignore"):
        return [np.float32(v) if math.isfinite(v) else v for v in vals], exp


def make_matrix(d: Data, n: int, dim: int):
    """A hostile (n, dim) matrix: (object, expected (n, dim) float32 | UNKNOWN | None)."""
    rows = [gen_values(d, dim) for _ in range(n)]
    exp = [f32(r) for r in rows]  # per row: float32 row, or None (must be rejected)
    kind = d.int_in(0, 19)
    if kind <= 3:
        return rows, exp
    if kind == 4:
        return np.array(rows, dtype=np.float64).reshape(n, dim), exp
    if kind == 5:
        return np.asfortranarray(np.array(rows, dtype=np.float64).reshape(n, dim)), exp
    if kind == 6:
        a = np.array(rows, dtype=np.float64).reshape(n, dim).T.copy().T  # F-order view
        a.flags.writeable = False
        return a, exp
    if kind == 7:
        a = np.array(rows, dtype=">f8").reshape(n, dim)
        return a, exp
    if kind == 8:
        a = np.repeat(np.array(rows, dtype=np.float64).reshape(n, dim), 2, axis=1)[:, ::2]
        return a, exp
    if kind == 9:
        return np.matrix(np.array(rows).reshape(n, dim)), None
    if kind == 10:
        return np.ma.masked_array(np.array(rows).reshape(n, dim)), None
    if kind == 11:
        return np.array(rows, dtype=object).reshape(n, dim), unknown_rows(exp)
    if kind == 12:
        return (r for r in rows), unknown_rows(exp)
    if kind == 13:  # ragged
        if n >= 2:
            rows2 = [list(r) for r in rows]
            rows2[-1] = rows2[-1] + [1.0]
            return rows2, None
        return rows, exp
    if kind == 14:  # wrong number of rows
        extra = [gen_values(d, dim)]
        return rows + extra, None
    if kind == 15:
        return np.array(rows, dtype=np.float64).reshape(-1), (UNKNOWN if n == 1 else None)
    if kind == 16:
        return np.array(rows, dtype=np.float64).reshape(n, dim, 1), None
    if kind == 17:
        return d.pick([None, "m", 3.0, [], np.zeros((0, 0))]), None
    if kind == 18:
        return np.broadcast_to(np.float32(1.0), (n, d.pick([2**22, 10**7]))), None
    return [tuple(r) for r in rows], exp


def row_of(exp, i, where):
    if exp is UNKNOWN:
        return UNKNOWN
    if exp is None or i >= len(exp) or exp[i] is None:
        raise AssertionError(f"{where} accepted row {i}, which must be rejected")
    return exp[i]


def unknown_rows(exp):
    """Rows whose exact stored value we do not predict (None rows stay None)."""
    return [None if r is None else UNKNOWN for r in exp]


class Harness:
    def __init__(self, d: Data) -> None:
        self.d = d
        self.now = [1000.0]
        self.clock_raises = False
        self.model: dict = {}   # key -> (expected vector or UNKNOWN, write time)
        self.pending_put = None  # (PutBatch, keys, expected)
        self.pending_get = None  # (GetBatch, keys)

    # -- setup ----------------------------------------------------------------------

    def clock(self) -> float:
        if self.clock_raises:
            self.clock_raises = False
            raise ClockError("fuzz clock")
        return self.now[0]

    def build(self):
        d = self.d
        me = d.int_in(1, 8)
        if d.int_in(0, 15) == 0:
            me = d.pick([0, -1, 2**70, 1.5, "3", True, np.int64(3), None])
        mm = d.pick([0.0001, 0.0005, 0.001, 0.002, 0.01, 0.05, 1.0, 2.0**-20])
        if d.int_in(0, 15) == 0:
            mm = d.pick([0, -1.0, math.nan, math.inf, "1", 2.0**42, 1e-300, np.float32(0.01)])
        ttl = d.pick([None, None, 1.0, 5.0, 0.25, 100.0])
        if d.int_in(0, 15) == 0:
            ttl = d.pick([0, -1.0, math.nan, math.inf, "5", 1e-300])
        dim = d.pick([None, None, 1, 2, 3, 4, 8])
        if d.int_in(0, 15) == 0:
            dim = d.pick([0, -1, 2**40, 2**31, 1.0, "4", np.int32(2), True, 10**6])
        self.ttl = ttl if isinstance(ttl, (int, float)) else None
        self.dim = dim
        clock = self.clock
        if d.int_in(0, 15) == 0:
            clock = d.pick([None, 5, "clock", lambda: "x", lambda: math.nan, lambda: None])
        if TRACE:
            print(f"cache = SyncEmbeddingCache(max_entries={me!r}, ttl_seconds={ttl!r}, "
                  f"max_memory_mb={mm!r}, dim={dim!r}, clock={clock!r})", file=sys.stderr)
        self.cache = SyncEmbeddingCache(max_entries=me, ttl_seconds=ttl, max_memory_mb=mm,
                                        dim=dim, clock=clock)
        if TRACE:
            self.cache = _Traced(self.cache, "cache")
        self.clock_ok = clock is self.clock
        self.keys = []
        for i in range(d.int_in(2, 7)):
            self.keys.append(self.make_key(i))

    def make_key(self, i: int):
        d = self.d
        kind = d.int_in(0, 9)
        ch = f"h{i}" + d.text()
        mv = d.pick(["m", "model-v1", "m:x"])
        cid = d.pick([None, "", "c", f"c:{i}"])
        if kind == 1:
            ch = ch + "\ud800"  # lone surrogate
        elif kind == 2:
            ch = ch + "x" * d.pick([1000, 100_000])
        elif kind == 3:
            cid = "\udfff" + str(i)
        elif kind == 4:
            mv = mv + "\x00"
        try:
            return CacheKey(ch, mv, cid)
        except ALLOWED:
            pass
        return CacheKey(f"fallback{i}", "m", None)

    # -- argument generators ------------------------------------------------------------

    def fixed_dim(self) -> bool:
        return isinstance(self.dim, int) and not isinstance(self.dim, bool) and self.dim >= 1

    def vec_dim(self) -> int:
        d = self.d
        if isinstance(self.dim, int) and not isinstance(self.dim, bool) and 1 <= self.dim <= 8:
            if d.int_in(0, 7) != 0:
                return self.dim
        return d.int_in(1, 6)

    def key(self):
        d = self.d
        if d.int_in(0, 15) == 0:
            return d.pick(["k", None, 1, ("a", "b", None), b"k", 1.5, object()]), False
        return d.pick(self.keys), True

    def key_list(self, n: int):
        """(keys object to pass, list of CacheKeys it holds or None if hostile)."""
        d = self.d
        ks = [d.pick(self.keys) for _ in range(n)]
        kind = d.int_in(0, 15)
        if kind <= 8:
            return ks, ks
        if kind == 9:
            return tuple(ks), ks
        if kind == 10:
            return (k for k in ks), ks
        if kind == 11:
            a = np.empty(n, dtype=object)
            for i, k in enumerate(ks):
                a[i] = k
            return a, ks
        if kind == 12:
            return ks + [d.pick(["k", None, 3])], None
        if kind == 13:
            return d.pick(["abc", None, 5, ks[0] if ks else None, {"a": 1}]), None
        if kind == 14:
            return [], []
        return dict.fromkeys(ks).keys(), list(dict.fromkeys(ks))

    # -- the model -------------------------------------------------------------------------

    def stored(self, key, expected, when=None) -> None:
        if expected is None:
            raise AssertionError(f"accepted a vector that must be rejected, for {key!r}")
        if expected is not UNKNOWN:
            expected = np.array(expected, dtype=np.float32)
            if self.fixed_dim() and expected.shape != (self.dim,):
                raise AssertionError(f"stored a {expected.shape} vector under {key!r} in a "
                                     f"cache with dim={self.dim}")
        self.model[key] = (expected, self.now[0] if when is None else when)

    def check_hit(self, key, vec, where: str) -> None:
        if key not in self.model:
            raise AssertionError(f"{where}: hit for {key!r}, which holds nothing (removed, "
                                 "cleared or never stored)")
        exp, t = self.model[key]
        if self.ttl is not None and self.clock_ok and self.now[0] - t > self.ttl * 1.0000001:
            raise AssertionError(f"{where}: hit for {key!r} written at {t}, now {self.now[0]}, "
                                 f"ttl {self.ttl}")
        if exp is UNKNOWN:
            return
        v = np.asarray(vec)
        if v.shape != exp.shape or not np.array_equal(v, exp):
            raise AssertionError(f"{where}: {key!r} returned {v!r}, last stored {exp!r}")

    def check_state(self) -> None:
        c = self.cache
        c._check_invariants()
        n = len(c)
        if n > c.max_entries:
            raise AssertionError(f"len {n} > max_entries {c.max_entries}")
        if n > len(self.model):
            raise AssertionError(f"len {n} but only {len(self.model)} keys can be stored")

    # -- one operation ---------------------------------------------------------------------

    def op(self) -> None:
        d = self.d
        c = self.cache
        kind = d.int_in(0, 20)
        if kind == 20:
            self.snapshot_op()
        elif kind <= 2:  # put
            k, ok = self.key()
            v, exp = make_vector(d, self.vec_dim())
            c.put(k, v)
            if not ok:
                raise AssertionError(f"put accepted key {k!r}")
            self.stored(k, exp)
            if isinstance(v, np.ndarray) and v.flags.writeable and v.dtype.kind == "f" \
                    and v.size and v.size < 100:
                v[...] = 42.0  # the cache must have copied
        elif kind <= 4:  # get
            k, ok = self.key()
            r = c.get(k)
            if not ok:
                raise AssertionError(f"get accepted key {k!r}")
            if r is not None:
                if not (isinstance(r, np.ndarray) and r.dtype == np.float32 and r.ndim == 1
                        and r.flags.writeable and r.flags.c_contiguous):
                    raise AssertionError(f"get returned {type(r)} {getattr(r, 'flags', '')}")
                self.check_hit(k, r, "get")
                r[...] = -7.0
        elif kind == 5:  # put_many
            n = d.int_in(0, 4)
            kobj, ks = self.key_list(n)
            m, exp = make_matrix(d, len(ks) if ks is not None else n, self.vec_dim())
            c.put_many(kobj, m)
            if ks is None:
                raise AssertionError(f"put_many accepted keys {kobj!r}")
            self.store_rows(ks, exp, "put_many")
        elif kind <= 7:  # get_many
            n = d.int_in(0, 5)
            kobj, ks = self.key_list(n)
            out = None
            use_out = d.bool()
            if use_out:
                out = self.make_out(ks if ks is not None else [None] * n)
            matrix, found = c.get_many(kobj, out) if use_out else c.get_many(kobj)
            if ks is None:
                raise AssertionError(f"get_many accepted keys {kobj!r}")
            if use_out and matrix is not out:
                raise AssertionError("get_many(out=) did not return out")
            self.check_rows(ks, matrix, found, "get_many")
        elif kind == 8:  # put_batch / take / store
            self.put_batch_op()
        elif kind == 9:  # get_batch / read
            self.get_batch_op()
        elif kind == 10:
            k, ok = self.key()
            r = c.remove(k)
            if not ok:
                raise AssertionError(f"remove accepted key {k!r}")
            if r and k not in self.model:
                raise AssertionError(f"remove({k!r}) removed an entry that holds nothing")
            self.model.pop(k, None)
            if r is not True and r is not False:
                raise AssertionError(f"remove returned {r!r}")
        elif kind == 11:
            if d.int_in(0, 3) == 0:
                c.clear()
                self.model.clear()
        elif kind == 12:
            k, ok = self.key()
            r = k in c
            if r and (not ok or k not in self.model):
                raise AssertionError(f"{k!r} in cache but holds nothing")
            if r and ok:
                _, t = self.model[k]
                if self.ttl is not None and self.clock_ok and \
                        self.now[0] - t > self.ttl * 1.0000001:
                    raise AssertionError(f"expired {k!r} still in cache")
        elif kind == 13:
            info = c.get_cache_info()
            if info.size != len(c):
                raise AssertionError(f"info.size {info.size} != len {len(c)}")
            if info.memory_usage_bytes > info.memory_budget_bytes:
                raise AssertionError(f"memory {info.memory_usage_bytes} > budget "
                                     f"{info.memory_budget_bytes}")
            self.check_memory()
        elif kind <= 16:
            self.goc_op()
        elif kind == 17:  # advance the clock
            self.now[0] += d.pick([0.0, 0.1, 0.25, 1.0, 1.0000001, 5.0, 100.0, 1e9])
            if TRACE:
                print(f"now = {self.now[0]!r}", file=sys.stderr)
        elif kind == 18:
            if d.int_in(0, 7) == 0:
                self.clock_raises = True
                try:
                    c.get(d.pick(self.keys))
                finally:
                    self.clock_raises = False
        else:
            self.hostile_batch_args()

    def snapshot_op(self) -> None:
        """Save the cache, mutate the file (or not), load it: the load must return
        a consistent cache whose every hit agrees with the model, or raise
        SnapshotError (an unmutated file must load). Sometimes the loaded cache
        replaces the harness's cache for the operations that follow."""
        d = self.d
        path = os.path.join(_snapshot_dir(), "fuzz.snap")
        saved = self.cache.save(path)
        with open(path, "rb") as f:
            original = f.read()
        data = bytearray(original)
        mode = d.int_in(0, 8)
        if mode >= 7:  # two saves of the same layout: spliced (7) or rewritten in place (8)
            try:
                self.two_saves_op(path, mode == 8)
            finally:
                os.unlink(path)
            return
        if mode == 1:  # bit flips
            for _ in range(d.int_in(1, 4)):
                data[d.int_in(0, len(data) - 1)] ^= 1 << d.int_in(0, 7)
        elif mode == 2:  # truncation
            del data[d.int_in(0, len(data)) :]
        elif mode in (3, 4):  # a header count / offset / limit forged (4: re-checksummed)
            at = d.pick([28, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104])
            width = 4 if at == 28 else 8
            value = d.pick([0, 1, 2, 3, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1])
            data[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
            if mode == 4:
                data[152:160] = snapshot_checksum(bytes(data[:152]), 1).to_bytes(8, "little")
        elif mode == 5 and len(data) > 256:  # two 48-byte runs swapped
            a = d.int_in(160, len(data) - 48)
            b = d.int_in(160, len(data) - 48)
            ra, rb = bytes(data[a : a + 48]), bytes(data[b : b + 48])
            data[b : b + 48] = ra
            data[a : a + 48] = rb
        elif mode == 6:
            data += bytes(d.int_in(1, 8))
        kwargs = {}
        if d.int_in(0, 3) == 0:
            name = d.pick(["max_entries", "max_memory_mb", "ttl_seconds", "dim"])
            kwargs[name] = d.pick([None, 1, 2, 0, -1, 0.5, 1e-6, "x", 2**70, math.nan])
        with open(path, "wb") as f:
            f.write(data)
        clock = self.clock if self.clock_ok else None
        try:
            loaded = SyncEmbeddingCache.load(path, clock=clock, **kwargs)
        except SnapshotError:
            if bytes(data) == original:
                raise AssertionError(
                    f"an intact snapshot of {saved} entries was rejected"
                ) from None
            return
        finally:
            os.unlink(path)
        loaded._check_invariants()
        if bytes(data) == original and not kwargs and len(loaded) > saved:
            raise AssertionError(f"loaded {len(loaded)} entries from a snapshot of {saved}")
        for k in self.keys:
            if k in loaded:
                self.check_hit(k, loaded.get(k), "loaded snapshot")
        if not kwargs and bytes(data) == original and d.bool():
            self.cache = loaded
            self.pending_put = self.pending_get = None

    def two_saves_op(self, path: str, in_place: bool) -> None:
        """Two saves of the same layout (the saved cache loaded without a TTL and
        saved again, so that no entry expires meanwhile; then every vector changed
        and saved again), then a mix of the two files' bytes: spliced at section
        boundaries or random cuts, or one file rewritten in place with the other
        while a load reads it. The load must equal one save entirely or raise
        SnapshotError."""
        d = self.d
        cache_a = SyncEmbeddingCache.load(path, ttl_seconds=None)
        cache_a.save(path)
        with open(path, "rb") as f:
            first = f.read()
        cache_b = SyncEmbeddingCache.load(path)
        for k in self.keys:
            if k in cache_b:
                v = cache_b.get(k)
                cache_b.put(k, -v if d.bool() else v + 1.0)
        path_b = path + ".b"
        cache_b.save(path_b)
        with open(path_b, "rb") as f:
            second = f.read()
        os.unlink(path_b)
        if len(second) != len(first):
            raise AssertionError(f"two saves of one layout: {len(first)} and {len(second)} bytes")
        kind = "rewritten in place" if in_place else "spliced"
        TWO_SAVES[kind] = TWO_SAVES.get(kind, 0) + 1
        want = [_contents(cache_a, self.keys), _contents(cache_b, self.keys)]
        files = (first, second)
        if in_place:
            with open(path, "wb") as f:
                f.write(first)
            loaded, mixed = _load_while_rewritten(path, files, d.int_in(1, 64) * 4096,
                                                  d.int_in(0, 3))
        else:
            cuts = sorted({d.int_in(0, len(first)) for _ in range(d.int_in(1, 4))}
                          | ({d.pick(_section_starts(first))} if d.bool() else set()))
            data = bytearray(files[d.int_in(0, 1)])
            which = d.int_in(0, 1)
            for a, b in zip(cuts, [*cuts[1:], len(first)]):
                data[a:b] = files[which][a:b]
                which ^= 1
            with open(path, "wb") as f:
                f.write(data)
            mixed = bytes(data) not in files
            try:
                loaded = SyncEmbeddingCache.load(path)
            except SnapshotError:
                loaded = None
            if loaded is None and not mixed:
                raise AssertionError("an intact snapshot was rejected")
        if loaded is None:
            return
        if mixed:
            raise AssertionError("a file mixing the bytes of two saves loaded")
        loaded._check_invariants()
        if _contents(loaded, self.keys) not in want:
            raise AssertionError("a load mixes the entries of two saves")

    def check_memory(self) -> None:
        """Every live entry is a key of the model: count them (``in`` changes no
        recency) and, when every live value is known, check the exact accounting."""
        c = self.cache
        info = c.get_cache_info()
        live = [k for k in self.model if k in c]
        if len(live) != info.size:
            raise AssertionError(f"info.size {info.size}, but {len(live)} model keys are live")
        if all(self.model[k][0] is not UNKNOWN for k in live):
            want = sum(self.model[k][0].size * 4 + info.entry_overhead_bytes for k in live)
            if info.memory_usage_bytes != want:
                raise AssertionError(f"memory_usage_bytes {info.memory_usage_bytes}, live "
                                     f"entries account for {want}")

    def make_out(self, ks):
        d = self.d
        n = len(ks)
        dim = self.vec_dim()
        kind = d.int_in(0, 9)
        if kind <= 3:
            return np.zeros((n, dim), np.float32)
        if kind == 4:
            return np.zeros((n, dim), np.float64)
        if kind == 5:
            return np.zeros((n + 1, dim), np.float32)
        if kind == 6:
            return np.asfortranarray(np.zeros((n, dim), np.float32))
        if kind == 7:
            a = np.zeros((n, dim), np.float32)
            a.flags.writeable = False
            return a
        if kind == 8:
            return np.zeros((n, dim * 2), np.float32)[:, ::2]
        return d.pick([[], "out", np.matrix(np.zeros((n, dim), np.float32)), np.zeros(n)])

    def check_rows(self, ks, matrix, found, where: str) -> None:
        n = len(ks)
        if not isinstance(matrix, np.ndarray) or matrix.dtype != np.float32 or matrix.ndim != 2 \
                or matrix.shape[0] != n:
            raise AssertionError(f"{where}: matrix {type(matrix)} "
                                 f"{getattr(matrix, 'shape', None)} for {n} keys")
        if not isinstance(found, np.ndarray) or found.dtype != np.bool_ or found.shape != (n,):
            raise AssertionError(f"{where}: found {found!r}")
        matrix = np.asarray(matrix)
        for i, k in enumerate(ks):
            if found[i]:
                self.check_hit(k, matrix[i], f"{where}[{i}]")
            elif np.any(matrix[i] != 0):
                raise AssertionError(f"{where}[{i}]: miss row not zero: {matrix[i]!r}")

    def store_rows(self, ks, exp, where: str) -> None:
        if not ks:
            return
        if exp is None:
            raise AssertionError(f"{where} accepted a matrix that must be rejected")
        for i, k in enumerate(ks):
            self.stored(k, row_of(exp, i, where))

    def put_batch_op(self) -> None:
        d = self.d
        c = self.cache
        if self.pending_put is not None and d.bool():
            pb, ks, exp = self.pending_put
            if d.bool():
                start = pb.taken if d.int_in(0, 7) else d.int_in(0, pb.n + 1)
                stop = d.pick([None, start + d.int_in(0, 2), pb.n, -1, pb.n + 1])
                before = pb.taken
                pb.take(start, stop)
                if pb.taken < before:
                    raise AssertionError("take went backwards")
                for i in range(before, pb.taken):
                    row_of(exp, i, "take")
            else:
                start = d.int_in(0, pb.n)
                stop = d.pick([None, start + d.int_in(0, 2), pb.taken, -1])
                pb.store(start, stop)
                end = pb.taken if stop is None else stop
                for i in range(start, end):
                    self.stored(ks[i], row_of(exp, i, "store"))
            return
        n = d.int_in(0, 5)
        kobj, ks = self.key_list(n)
        m, exp = make_matrix(d, len(ks) if ks is not None else n, self.vec_dim())
        kwargs = {}
        if d.int_in(0, 3) == 0:
            kwargs["what"] = d.pick(["rows", "", "x" * 200, "\ud800"])
        if d.int_in(0, 3) == 0:
            kwargs["dim"] = d.pick([None, 1, 2, 3, 4, 0, -1, "2", 2.0, 2**40])
        pb = c.put_batch(kobj, m, **kwargs)
        if ks is None:
            raise AssertionError(f"put_batch accepted keys {kobj!r}")
        if ks and isinstance(exp, list) and exp[0] is not None and exp[0] is not UNKNOWN \
                and exp[0].shape != (pb.dim,):
            raise AssertionError(f"put_batch dim {pb.dim} for rows of {exp[0].shape}")
        self.pending_put = (pb, ks, exp)
        if d.bool():
            pb.take(0, d.pick([None, 1, n]))
            for i in range(pb.taken):
                row_of(exp, i, "take")
            if isinstance(m, np.ndarray) and m.flags.writeable and m.size and m.size < 100 \
                    and m.dtype.kind == "f" and type(m) is np.ndarray:
                m[...] = 99.0  # take copied; our expected values stay the old ones
                if isinstance(exp, list):
                    # ... for the rows taken; later takes read the 99s
                    self.pending_put = (pb, ks, exp[: pb.taken] + [UNKNOWN] * (len(exp) - pb.taken))

    def get_batch_op(self) -> None:
        d = self.d
        c = self.cache
        if self.pending_get is not None and d.bool():
            gb, ks = self.pending_get
            start = gb.read_count if d.int_in(0, 7) else d.int_in(0, gb.n + 1)
            stop = d.pick([None, start + 1, gb.n, -1, gb.n + 2])
            before = gb.read_count
            gb.read(start, stop)
            end = gb.read_count
            for i in range(before, end):
                row = np.asarray(gb.matrix)[i]  # np.asarray: out= may be an np.matrix
                if gb.found[i]:
                    self.check_hit(ks[i], row, f"get_batch[{i}]")
                elif np.any(row != 0):
                    raise AssertionError(f"get_batch[{i}]: miss row not zero")
            return
        n = d.int_in(0, 5)
        kobj, ks = self.key_list(n)
        use_out = d.bool()
        out = self.make_out(ks if ks is not None else [None] * n) if use_out else None
        gb = c.get_batch(kobj, out) if use_out else c.get_batch(kobj)
        if ks is None:
            raise AssertionError(f"get_batch accepted keys {kobj!r}")
        self.pending_get = (gb, ks)

    def goc_op(self) -> None:
        d = self.d
        c = self.cache
        n = d.int_in(0, 5)
        kobj, ks = self.key_list(n)
        dim = self.vec_dim()
        mode = d.int_in(0, 15)
        calls = []
        produced = {}
        h = self
        touched = []

        def compute(missing):
            calls.append(list(missing))
            m = len(missing)
            if mode <= 5:
                if mode >= 3:
                    rows, exp = make_matrix(d, m, dim)
                else:
                    rows = np.array(gen_values(d, m * dim), dtype=np.float64).reshape(m, dim)
                    exp = [f32(r) for r in rows]
                produced["exp"] = exp
                return rows
            if mode == 6:
                produced["exp"] = None
                return np.zeros((m + 1, dim))
            if mode == 7:
                produced["exp"] = None
                return np.full((m, dim), math.nan)
            if mode == 8:
                raise ComputeError("compute failed")
            if mode == 9:
                raise StopIteration
            if mode == 10:
                produced["exp"] = None
                return d.pick([None, "rows", 3, np.zeros((m, dim, 1)), [[1.0]] * (m + 2)])
            if mode == 11:  # re-enter on the same keys: must not deadlock
                produced["exp"] = None
                return c.get_or_compute(list(missing), lambda mm: np.ones((len(mm), dim)))
            if mode == 12:  # mutate the cache from inside compute
                k = d.pick(h.keys)
                touched.append(k)
                if d.bool():
                    c.remove(k)
                    h.model.pop(k, None)
                else:
                    c.clear()
                    h.model.clear()
                produced["exp"] = [np.ones(dim, np.float32)] * m
                return np.ones((m, dim))
            if mode == 13:
                produced["exp"] = UNKNOWN
                return (list(np.ones(dim) * 2) for _ in range(m))
            produced["exp"] = [np.full(dim, 3.0, np.float32)] * m
            return np.full((m, dim), 3.0, np.float32)

        if mode == 15 and d.bool():
            compute_arg = d.pick([None, 5, "f", np.zeros(3)])
        else:
            compute_arg = compute
        kwargs = {}
        if d.int_in(0, 5) == 0:
            kwargs["timeout"] = d.pick([None, 0.0, -1.0, math.nan, math.inf, "1", 10.0])
        snapshot = dict(self.model)
        r = c.get_or_compute(kobj, compute_arg, **kwargs)
        if ks is None:
            raise AssertionError(f"get_or_compute accepted keys {kobj!r}")
        if compute_arg is not compute:
            if calls or ks:
                pass
        if len(calls) > 1:
            raise AssertionError(f"compute called {len(calls)} times")
        missing = calls[0] if calls else []
        if len(set(missing)) != len(missing):
            raise AssertionError(f"compute got duplicate keys {missing!r}")
        firsts = list(dict.fromkeys(ks))
        if [k for k in firsts if k in set(missing)] != missing:
            raise AssertionError(f"compute got {missing!r}, not in key order of {ks!r}")
        if not isinstance(r, np.ndarray) or r.dtype != np.float32 or r.ndim != 2 \
                or r.shape[0] != len(ks):
            raise AssertionError(f"get_or_compute returned {type(r)} {getattr(r, 'shape', '')}")
        exp = produced.get("exp", UNKNOWN)
        mi = {k: i for i, k in enumerate(missing)}
        for k in missing:
            row_of(exp, mi[k], f"get_or_compute (compute mode {mode})")
        for i, k in enumerate(ks):
            if k in mi:
                if exp is not UNKNOWN and exp[mi[k]] is not UNKNOWN \
                        and not np.array_equal(r[i], exp[mi[k]]):
                    raise AssertionError(f"get_or_compute row {i}: {r[i]!r}, compute gave "
                                         f"{exp[mi[k]]!r}")
            elif not touched:
                self.model, saved = snapshot, self.model
                try:
                    self.check_hit(k, r[i], f"get_or_compute[{i}]")
                finally:
                    self.model = saved
        for k in missing:
            self.stored(k, UNKNOWN if touched else row_of(exp, mi[k], "get_or_compute"))

    def hostile_batch_args(self) -> None:
        d = self.d
        c = self.cache
        which = d.int_in(0, 5)
        if which == 0 and self.pending_put is not None:
            pb = self.pending_put[0]
            pb.take(d.pick(["0", 1.5, None, -(2**70), np.int64(0)]),
                    d.pick([None, "x", 2**70, np.int64(1)]))
            raise _Skip
        if which == 1 and self.pending_get is not None:
            gb = self.pending_get[0]
            gb.read(d.pick(["0", 1.5, -(2**70), np.int64(0)]), d.pick([None, "x", 2**70]))
            raise _Skip
        if which == 2 and self.pending_put is not None:
            pb = self.pending_put[0]
            pb.store(d.pick(["0", 1.5, -(2**70), np.int64(0)]), d.pick([None, "x", 2**70]))
            for k in self.pending_put[1]:  # accepted: some rows stored, values not tracked
                self.model[k] = (UNKNOWN, self.now[0])
            raise _Skip
        if which == 3:
            c.get_many(d.pick(self.keys))  # a single key, not a sequence
            raise AssertionError("get_many accepted a bare CacheKey")
        self.check_memory()


_SNAPSHOT_DIR: list[str] = []
TWO_SAVES: dict[str, int] = {}  # how many loads of two saves mixed, by kind (the summary)


def _contents(cache, keys) -> dict:
    """key -> vector bytes of the keys present (``in`` changes no recency)."""
    return {k: cache.get(k).tobytes() for k in keys if k in cache}


def _section_starts(data: bytes) -> list[int]:
    """Where the sections of a (version-2) snapshot start: the blocks, the
    entries and their trailer, the groups and their trailer; and each 8-byte field."""
    entries_at, groups_at = struct.unpack_from("<QQ", data, 88)
    size = len(data)
    return [160, entries_at, groups_at - 16, groups_at - 8, groups_at, size - 16, size - 8,
            *range(0, 160, 8)]


def _load_while_rewritten(path: str, files: tuple[bytes, bytes], chunk: int, pause: int):
    """Load `path` while a thread rewrites it in place, alternating the two files
    `chunk` bytes at a time. Returns (the loaded cache or None for SnapshotError,
    whether the file changed under the load)."""
    stop = threading.Event()
    writes = [0]

    def rewrite() -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            which = 1
            while not stop.is_set():
                data = files[which]
                for at in range(0, len(data), chunk):
                    os.pwrite(fd, data[at : at + chunk], at)
                    writes[0] += 1
                    if pause:
                        time.sleep(pause * 1e-5)
                    if stop.is_set():
                        return
                which ^= 1
        finally:
            os.close(fd)

    thread = threading.Thread(target=rewrite)
    thread.start()
    try:
        loaded = SyncEmbeddingCache.load(path)
    except SnapshotError:
        loaded = None
    finally:
        stop.set()
        thread.join()
    # whether a load that succeeded read one file whole cannot be told from the
    # bytes: the caller checks its contents equal one save's
    return loaded, False


def _snapshot_dir() -> str:
    """A private folder for the snapshot operation's files (removed at exit)."""
    if not _SNAPSHOT_DIR:
        _SNAPSHOT_DIR.append(tempfile.mkdtemp(prefix="embcache-fuzz-"))
        atexit.register(shutil.rmtree, _SNAPSHOT_DIR[0], True)
    return _SNAPSHOT_DIR[0]


def _short(x) -> str:
    r = repr(x)
    return r if len(r) <= 160 else r[:150] + f"...({len(r)} chars)"


class _Traced:
    """EMBCACHE_FUZZ_TRACE=1: print every call on the cache (to write reproducers)."""

    def __init__(self, obj, name: str) -> None:
        self._obj, self._name = obj, name

    def __getattr__(self, attr):
        val = getattr(self._obj, attr)
        if not callable(val) or attr.startswith("__"):
            return val
        name = self._name

        def call(*args, **kwargs):
            shown = ", ".join([_short(a) for a in args]
                              + [f"{k}={_short(v)}" for k, v in kwargs.items()])
            try:
                r = val(*args, **kwargs)
            except BaseException as e:
                print(f"{name}.{attr}({shown}) -> raises {type(e).__name__}: {e}", file=sys.stderr)
                raise
            print(f"{name}.{attr}({shown}) -> {_short(r)}", file=sys.stderr)
            if attr in ("put_batch", "get_batch"):
                return _Traced(r, "pb" if attr == "put_batch" else "gb")
            return r
        return call

    def __len__(self):
        n = len(self._obj)
        print(f"len({self._name}) -> {n}", file=sys.stderr)
        return n

    def __contains__(self, k):
        r = k in self._obj
        print(f"{_short(k)} in {self._name} -> {r}", file=sys.stderr)
        return r


TRACE = os.environ.get("EMBCACHE_FUZZ_TRACE", "") not in ("", "0")


class _Skip(Exception):
    """A hostile call that succeeded and whose effect we do not model."""


def _feedback(e: BaseException) -> None:
    """One branch per error class and message shape: coverage feedback for the
    (uninstrumented) core's error paths."""
    from embcache import errors as E
    t = type(e)
    if t is E.DimensionMismatchError:
        pass
    elif t is E.EntryTooLargeError:
        pass
    elif t is E.InvalidVectorError:
        msg = str(e)
        if "nan" in msg:
            pass
        elif "inf" in msg:
            pass
        elif "overflows" in msg:
            pass
        elif "empty" in msg:
            pass
        elif "shape" in msg or "-D" in msg:
            pass
        elif "rows" in msg:
            pass
    elif t is E.VectorTypeError:
        pass
    elif t is E.InvalidKeyError:
        pass
    elif t is E.KeyTypeError:
        pass
    elif t is E.ArgumentValueError:
        if "timeout" in str(e):
            pass
        elif "stop" in str(e) or "start" in str(e) or "rows" in str(e):
            pass
    elif t is E.ArgumentTypeError:
        if "out" in str(e):
            pass
    elif isinstance(e, E.EmbcacheError):
        pass
    elif isinstance(e, MemoryError):
        pass
    elif isinstance(e, RuntimeError):
        if "StopIteration" in str(e):
            pass
        elif e.__cause__ is not None:
            pass
    elif isinstance(e, ComputeError):
        if e.__cause__ is not None:
            pass
    elif isinstance(e, ClockError):
        pass


def test_one_input(data: bytes) -> None:
    """Run one fuzz input; AssertionError (or any unexpected exception) is a finding."""
    d = Data(data)
    h = Harness(d)
    try:
        h.build()
    except AssertionError:
        raise
    except ALLOWED:
        return
    except Exception as e:
        raise AssertionError(f"SyncEmbeddingCache(...) raised {type(e).__name__}: {e}") from e
    for _ in range(MAX_OPS):
        if d.remaining() <= 0:
            break
        before = d.pos
        try:
            h.op()
        except _Skip:
            # a hostile pointer argument was accepted: drop what we cannot model
            h.model = {k: (UNKNOWN, t) for k, (_, t) in h.model.items()}
            h.pending_put = None
        except AssertionError:
            raise
        except ALLOWED as e:
            _feedback(e)
            if isinstance(e, RuntimeError) and type(e) is not RuntimeError \
                    and not isinstance(e, EmbcacheError):
                raise AssertionError(f"unexpected {type(e).__name__}: {e}") from e
        except Exception as e:
            raise AssertionError(f"op raised {type(e).__name__}: {e}") from e
        try:
            h.check_state()
        except AssertionError:
            raise
        except Exception as e:
            raise AssertionError(f"check raised {type(e).__name__}: {e}") from e
        if d.pos == before:
            break


def _random_mode(argv: list[str]) -> int:
    import argparse
    import hashlib
    import random
    import signal
    import time
    import traceback

    p = argparse.ArgumentParser(description="run the harness on files and random inputs")
    p.add_argument("--random", action="store_true")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--runs", type=int, default=0, help="stop after this many random inputs")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--timeout", type=int, default=20, help="seconds per input (a hang)")
    p.add_argument("paths", nargs="*")
    a = p.parse_args(argv)
    rng = random.Random(a.seed)

    def alarm(*_):
        raise AssertionError("input took longer than --timeout (hang)")

    signal.signal(signal.SIGALRM, alarm)
    files = []
    for path in a.paths:
        if os.path.isdir(path):
            files += [os.path.join(path, f) for f in sorted(os.listdir(path))]
        else:
            files.append(path)
    inputs = ((f, open(f, "rb").read()) for f in files)
    n = found = 0
    t0 = time.monotonic()

    def gen():
        yield from inputs
        while time.monotonic() - t0 < a.seconds and (not a.runs or n < a.runs):
            yield None, rng.randbytes(rng.randint(0, 600))

    for name, data in gen():
        n += 1
        signal.alarm(a.timeout)
        try:
            test_one_input(data)
        except Exception:
            found += 1
            out = "crash-" + hashlib.sha1(data).hexdigest()
            with open(out, "wb") as fh:
                fh.write(data)
            print(f"#{n} FINDING ({name or 'random'}) written to {out}", flush=True)
            traceback.print_exc()
        finally:
            signal.alarm(0)
    mixes = ", ".join(f"{v} {k}" for k, v in sorted(TWO_SAVES.items()))
    print(f"#{n} inputs, {found} findings, {time.monotonic() - t0:.0f} s"
          + (f" (two saves mixed: {mixes})" if mixes else ""), flush=True)
    return 1 if found else 0


def main() -> None:
    if atheris is None or "--random" in sys.argv:
        if atheris is None and "--random" not in sys.argv:
            print("atheris is not installed: running in plain random mode", file=sys.stderr)
            sys.argv.insert(1, "--random")
        sys.exit(_random_mode(sys.argv[1:]))
    # The Cython core is not instrumented (it is not built with libFuzzer), so
    # besides embcache's Python modules the harness itself is instrumented: its
    # branches (which op, which argument kind, which error came back) are the
    # coverage signal for the core.
    mod = sys.modules[__name__]
    for name, fn in list(vars(mod).items()):
        if callable(fn) and getattr(fn, "__module__", None) == __name__ \
                and hasattr(fn, "__code__"):
            setattr(mod, name, atheris.instrument_func(fn))
    for name, fn in list(vars(Harness).items()):
        if hasattr(fn, "__code__"):
            setattr(Harness, name, atheris.instrument_func(fn))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
