# cython: language_level=3
"""SharedEmbeddingCache: one cache in a shared-memory segment for every process
of a host.

The C side (embcache/shared/segment.h: layout, header checks and the crash-safety
argument; embcache/shared/stripe.h: robust stripe locks, repair, index, CLOCK)
touches no Python. This file owns the class, the Python surface, and its
calls into the stripes; opening.pxi opens a segment (argument checks, atomic
create, checked attach), lookup.pxi reads get_many's batches, stats.pxi
reports (get_cache_info, verify), rows.pxi encodes and decodes rows,
files.pxi names the files, flight.pxi, snapshot.pxi and batch.pxi hold
single flight, save / load and the batch protocol.

Locking: each operation locks one stripe at a time and only while holding the
GIL; a contended lock is waited for with the GIL dropped, but never held across
a GIL release, so a fork() (which runs with the GIL) never copies a stripe lock
held by one of this process's threads. Arrays are allocated before a lock is
taken; nothing Python is built under one.
"""

cimport cython
cimport numpy as cnp
from libc.errno cimport EBUSY
from libc.errno cimport errno as c_errno
from libc.math cimport INFINITY, isfinite
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast_ITEMS
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap

from embcache._core cimport CacheKey

import errno
import os
import re
import secrets
import stat
import threading

import numpy as np

from embcache._core import as_key_tuple
from embcache.core.checks import UNSET   # a load keyword not given: the snapshot's value
from embcache.core.info import CacheInfo
from embcache.errors import (
    ArgumentTypeError,
    CallContextError,
    ArgumentValueError,
    DimensionMismatchError,
    EntryTooLargeError,
    InvalidVectorError,
    KeyTypeError,
    SharedSegmentError,
    VectorTypeError,
)

cnp.import_array()

cdef extern from "shared/segment.h":
    int EMBC_SHM_SUPPORTED
    unsigned EMBC_MAX_DIM
    unsigned EMBC_SHM_HEADER_BYTES
    ctypedef struct embc_layout:
        uint32_t dim, storage, row_bytes, row_stride
        uint64_t max_entries, budget_bytes, capacity
        double max_memory_mb, ttl_seconds
        uint32_t n_stripes, cells_per_stripe
        uint64_t stripes_at, entries_at, cells_at, rows_at, total_bytes
    ctypedef struct embc_header:
        uint64_t k0, k1
    size_t EMBC_ENTRY_OVERHEAD
    const char *embc_layout_make(embc_layout *L, uint32_t dim, uint32_t storage, uint32_t row_bytes,
                                 uint64_t max_entries, double max_memory_mb,
                                 double ttl_seconds) noexcept nogil
    void embc_header_fill(embc_header *h, const embc_layout *L, uint64_t k0, uint64_t k1,
                          const unsigned char *boot_id) noexcept nogil
    const char *embc_header_check(const embc_header *h, uint64_t file_size,
                                  size_t (*row_bytes_of)(int, size_t) noexcept nogil,
                                  const unsigned char *boot_id, embc_layout *L) noexcept nogil
    uint32_t embc_stripe_cap(const embc_layout *L, uint32_t s) noexcept nogil

cdef extern from "shared/stripe.h":
    ctypedef struct embc_seg:
        char *base
        embc_layout L
        uint64_t k0, k1
    ctypedef struct embc_put:
        uint32_t slot
    ctypedef struct embc_entry:
        uint64_t digest[4]
        double expires_at
        uint32_t state
        uint32_t ref
    int EMBC_LIVE
    ctypedef struct embc_stripe:
        uint32_t size, hand
        uint64_t repairs, hits, misses, puts, overwrites, evictions, expirations, removals
    embc_stripe *embc_stripe_at(const embc_seg *g, uint32_t s) noexcept nogil
    embc_entry *embc_entries(const embc_seg *g, uint32_t s) noexcept nogil
    uint32_t embc_slots(const embc_seg *g, uint32_t s) noexcept nogil
    char *embc_row(const embc_seg *g, uint32_t s, uint32_t slot) noexcept nogil
    uint64_t embc_hash(const embc_seg *g, const uint64_t *digest) noexcept nogil
    uint32_t embc_stripe_of(const embc_seg *g, uint64_t h) noexcept nogil
    double embc_now() noexcept nogil
    int embc_lock(const embc_seg *g, uint32_t s, int block) noexcept nogil
    void embc_unlock(const embc_seg *g, uint32_t s) noexcept nogil
    const char *embc_lookup(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t *digest,
                            double now, int count) noexcept nogil
    void embc_prefetch_cell(const embc_seg *g, uint32_t s, uint64_t h) noexcept nogil
    int embc_put_begin(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t *digest,
                       double now, embc_put *p) noexcept nogil
    void embc_put_publish(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t *digest,
                          double expires_at, const embc_put *p) noexcept nogil
    int embc_remove(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t *digest,
                    double now) noexcept nogil
    void embc_clear(const embc_seg *g, uint32_t s) noexcept nogil
    int embc_init(const embc_seg *g) noexcept nogil
    const char *embc_verify(const embc_seg *g, uint32_t s) noexcept nogil

cdef extern from "shared/flight.h":
    int embc_pending_find(const embc_seg *g, uint32_t s, const uint64_t *digest) noexcept nogil
    int embc_pending_own(const embc_seg *g, uint32_t s, int i, const uint64_t *digest,
                         int32_t pid, uint32_t start, uint64_t thread, double now) noexcept nogil
    int embc_pending_mine(const embc_seg *g, uint32_t s, int i, const uint64_t *digest,
                          int32_t pid, uint32_t start, uint64_t thread) noexcept nogil
    void embc_pending_release(const embc_seg *g, uint32_t s, int i) noexcept nogil
    uint32_t *embc_pending_word(const embc_seg *g, uint32_t s, int i) noexcept nogil
    void embc_futex_wake(uint32_t *word) noexcept nogil
    void embc_futex_wait(uint32_t *word, uint32_t seen, double seconds) noexcept nogil
    ctypedef struct embc_pending:
        int32_t pid
        uint32_t start
        uint32_t word
        double started
    embc_pending *embc_pending_get(const embc_seg *g, uint32_t s, int i) noexcept nogil

cdef extern from "core/row_arrays.h":  # get's array: its block from a small pool
    int embc_row_arrays_init() except -1
    object embc_row_array(cnp.npy_intp dim)

embc_row_arrays_init()

include "rows.pxi"

ENTRY_OVERHEAD_BYTES = EMBC_ENTRY_OVERHEAD
"""Bytes each live entry costs in a segment besides its row (entry and cells)."""

NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
SHM_DIR = "/dev/shm"
MAX_DIM = EMBC_MAX_DIM
cdef double WAKE_EVERY_S = 0.05   # seconds a single-flight waiter sleeps before checking the owner


include "files.pxi"


@cython.final
cdef class SharedEmbeddingCache:
    """SharedEmbeddingCache(name, max_entries, ttl_seconds, max_memory_mb, *, dim,
                            storage="float32", mode=0o600)

    A cache of embedding vectors in a shared-memory segment that every process
    of the host opening the same `name` uses: the first creates it (with file
    mode `mode`), the others attach to it, and attaching with other limits
    raises ArgumentValueError naming the field that differs. A forked child uses
    its parent's object as is. Every process may be killed at any instant
    without stopping the others or making them read a wrong vector: a stripe
    whose lock holder died is repaired by the next process to lock it (entries
    may be lost, never corrupted). Linux only.
    """
    cdef embc_seg seg
    cdef int fd
    cdef readonly str path
    cdef object max_memory_mb_arg
    cdef object ttl_seconds_arg
    cdef int waiters           # threads of this process waiting on the segment or computing
    cdef bint created          # this object made the segment (rather than attaching to it)
    cdef char *scratch         # get_many's arrays for a batch (lookup.pxi: take_scratch)
    cdef int scratch_busy      # 1 while a get_many of some thread uses `scratch`
    cdef uint32_t scratch_stripes  # the stripe count `scratch` was sized for

    def __cinit__(self):
        self.fd = -1
        self.seg.base = NULL
        self.scratch = NULL

    def __init__(self, name, max_entries, ttl_seconds, max_memory_mb, *, dim,
                 storage="float32", mode=0o600, label=None):
        check_supported()
        path = segment_path(name)
        label = label_of(label, path)
        cdef embc_layout L
        layout_of_args(&L, max_entries, ttl_seconds, max_memory_mb, dim, storage, mode)
        while True:
            try:
                fd = open_segment(path)
            except FileNotFoundError:
                if segment_create(self, path, &L, mode):
                    break
                continue   # another process linked its segment first: attach to it
            segment_open_checked(self, path, fd)
            break
        self.max_memory_mb_arg = self.seg.L.max_memory_mb
        self.ttl_seconds_arg = self.seg.L.ttl_seconds if self.seg.L.ttl_seconds > 0 else None
        check_same_limits(self, &L, path)
        self.named(label)

    @classmethod
    def attach(cls, name, *, label=None):
        """Attach to the existing segment `name` with whatever limits it has.
        FileNotFoundError if there is none; SharedSegmentError for a file that is
        not a sound segment of this version. `label` as the constructor's."""
        check_supported()
        path = segment_path(name)
        label = label_of(label, path)
        cdef SharedEmbeddingCache self = cls.__new__(cls)
        segment_open_checked(self, path, open_segment(path))
        self.named(label)
        self.max_memory_mb_arg = self.seg.L.max_memory_mb
        self.ttl_seconds_arg = self.seg.L.ttl_seconds if self.seg.L.ttl_seconds > 0 else None
        return self

    @staticmethod
    def unlink(name):
        """Remove segment `name`'s file; processes attached keep using it until they
        close. True if it existed."""
        path = segment_path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def close(self):
        """Unmap the segment (it lives on for the other processes; unlink removes
        its name). Idempotent; any later call raises SharedSegmentError."""
        if self.waiters:
            raise SharedSegmentError("close() while this process is using the segment (a "
                                     "thread waiting on it, or a get_or_compute computing)")
        if self.seg.base != NULL:
            munmap(self.seg.base, self.seg.L.total_bytes)
            self.seg.base = NULL
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __dealloc__(self):
        free(self.scratch)
        if self.seg.base != NULL:
            munmap(self.seg.base, self.seg.L.total_bytes)
        if self.fd >= 0:
            os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __reduce__(self):
        raise TypeError("a SharedEmbeddingCache is not pickled: open it by name in "
                        "each process (SharedEmbeddingCache(name, ...) or .attach(name))")

    # --- locking -------------------------------------------------------------------

    cdef inline int lock(self, uint32_t s) except -1:
        cdef int rc
        if self.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        rc = embc_lock(&self.seg, s, 0)
        if rc == EBUSY:
            self.waiters += 1
            with nogil:
                rc = embc_lock(&self.seg, s, 1)
            self.waiters -= 1
        if rc:
            raise SharedSegmentError(f"could not lock a stripe of {self.path}: {os.strerror(rc)}")
        return 0

    cdef inline double expiry(self, double now) noexcept:
        return now + self.seg.L.ttl_seconds if self.seg.L.ttl_seconds > 0 else INFINITY

    # --- vectors in ------------------------------------------------------------------

    cdef cnp.ndarray checked_rows(self, object data, int ndim, str what):
        """`data` as the C-contiguous float32 (n, dim) (ndim 2) or (dim,) (ndim 1)
        array of its values, after every check a put makes (type, shape, dim,
        NaN / infinity, the storage's range), with SyncEmbeddingCache's errors
        and messages naming `what`; raises before anything changes."""
        if self.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        return read_rows(data, ndim, what, self.seg.L.dim, self.seg.L.storage)

    cdef int store_row(self, CacheKey key, const float *row, double now) except -1:
        """Encode `row` (dim float32, checked) in the segment's storage and publish
        it under `key` (rows/rows.pxi; the encoding runs into the fresh slot, which
        no reader sees until it is published)."""
        cdef uint64_t h = embc_hash(&self.seg, key.ident.digest)
        cdef uint32_t s = embc_stripe_of(&self.seg, h)
        cdef embc_put p
        self.lock(s)
        if embc_put_begin(&self.seg, s, h, key.ident.digest, now, &p):
            embc_unlock(&self.seg, s)
            raise SharedSegmentError(f"a stripe of {self.path} could not be repaired")
        encode_row(&self.seg.L, embc_row(&self.seg, s, p.slot), row)
        embc_put_publish(&self.seg, s, h, key.ident.digest, self.expiry(now), &p)
        embc_unlock(&self.seg, s)
        return 0

    cdef bint fetch_row(self, CacheKey key, float *out, double now, int count) except -1:
        """Decode the live row of `key` into `out` (dim float32; NULL: only say
        whether it is live) and return True, or False on a miss; `count` 1 moves
        the hit / miss counters and the CLOCK bit. The row is decoded under the
        stripe lock: one vectorised pass that reads fewer bytes than the float32
        copy it replaces, so the lock is held no longer than for float32."""
        cdef uint64_t h = embc_hash(&self.seg, key.ident.digest)
        cdef uint32_t s = embc_stripe_of(&self.seg, h)
        cdef const char *row
        self.lock(s)
        row = embc_lookup(&self.seg, s, h, key.ident.digest, now, count)
        if row != NULL and out != NULL:
            decode_row(&self.seg.L, out, row)
        embc_unlock(&self.seg, s)
        return row != NULL

    cdef double clock_now(self) noexcept:
        """The time store_row and fetch_row take (CLOCK_MONOTONIC seconds, the same
        clock in every process of the host)."""
        return embc_now()

    # --- the cache's methods -----------------------------------------------------------

    def put(self, key, vector):
        """Store `vector` (dim real numbers) under `key`, replacing any value; the
        oldest-unused entry of its stripe makes room when the stripe is full."""
        if type(key) is not CacheKey:
            raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        cdef cnp.ndarray row = self.checked_rows(vector, 1, "vector")
        self.store_row(<CacheKey>key, <const float *>cnp.PyArray_DATA(row), self.clock_now())

    def get(self, key):
        """The vector under `key` as a new float32 array, or None on a miss."""
        if type(key) is not CacheKey:
            raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        if self.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        cdef cnp.npy_intp dim = self.seg.L.dim
        cdef cnp.ndarray out = embc_row_array(dim)
        if self.fetch_row(<CacheKey>key, <float *>cnp.PyArray_DATA(out), self.clock_now(), 1):
            return out
        return None

    def get_many(self, keys, out=None):
        """``(matrix, found)``: a float32 (len(keys), dim) matrix whose miss rows are
        zero, and a bool (len(keys),) array. With `out` (C-contiguous float32 of that
        shape), rows are written there and `out` is returned."""
        cdef tuple seq = as_key_tuple(keys, "get_many")
        cdef Py_ssize_t i, n = len(seq)
        if self.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        cdef cnp.ndarray matrix
        if out is None:
            matrix = np.zeros((n, self.seg.L.dim), dtype=np.float32)
        else:
            check_out(self, out, n)
            matrix = out
        cdef cnp.ndarray found = np.zeros(n, dtype=np.bool_)
        cdef char *base = <char *>cnp.PyArray_DATA(matrix)
        cdef char *hit = <char *>cnp.PyArray_DATA(found)
        read_grouped(self, seq, base, hit)
        if out is not None:
            for i in range(n):
                if not hit[i]:
                    memset(base + i * self.seg.L.dim * 4, 0, self.seg.L.dim * 4)
        return matrix, found

    def put_many(self, keys, matrix):
        """Store row i of `matrix` under keys[i]; the whole matrix is checked before
        anything is stored."""
        cdef tuple seq = as_key_tuple(keys, "put_many")
        if self.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        cdef Py_ssize_t i, n = len(seq)
        if n == 0 and no_rows(matrix):
            return
        cdef cnp.ndarray rows = self.checked_rows(matrix, 2, "matrix")
        if rows.shape[0] != n:
            raise InvalidVectorError(f"matrix has {rows.shape[0]} rows for {n} keys")
        cdef const float *base = <const float *>cnp.PyArray_DATA(rows)
        cdef double now = self.clock_now()
        for i in range(n):
            self.store_row(<CacheKey>seq[i], base + i * self.seg.L.dim, now)

    def get_or_compute(self, keys, compute, *, timeout=None):
        """The (len(keys), dim) float32 matrix for `keys`: hits are read, and
        ``compute(missing_keys)`` (a list of distinct keys, in first-seen order) is
        called for the misses, returning one vector per key, which are stored.
        Single flight across every process attached: a key another process (or
        thread) is computing is waited for (a futex, no busy loop) rather than
        computed again; a waiter takes a key over when its computing process has
        died, or has held it longer than `timeout` seconds (None: only a death).
        A compute that would wait on a key it is itself computing raises
        CallContextError. What compute raises is raised; nothing of it is stored."""
        cdef tuple seq = as_key_tuple(keys, "get_or_compute")
        if not callable(compute):
            raise ArgumentTypeError(f"compute must be callable, got {type(compute).__name__}")
        cdef double late = INFINITY
        if timeout is not None:
            late = check_positive(timeout, "timeout")
        if self.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        return flight_get_or_compute(self, seq, compute, late)

    def save(self, path):
        """Write every live entry to the snapshot file `path` (the format of
        SyncEmbeddingCache.save, which SyncEmbeddingCache.load reads); returns how
        many. Each entry keeps its stored row byte for byte, its remaining TTL (as
        a wall-clock expiry) and its place in CLOCK's order (least recent first as
        far as reference bits tell). Written to a temporary file in the same
        folder, fsynced and renamed over `path`; a stripe is locked only to list
        its entries and to copy one row; the disk is written with no lock held."""
        return segment_save(self, path)

    @classmethod
    def load(cls, path, name, max_entries=UNSET, ttl_seconds=UNSET, max_memory_mb=UNSET, *,
             storage=UNSET, mode=0o600, label=None):
        """The SharedEmbeddingCache `name` holding the entries of the snapshot file
        `path` (saved by either cache). A limit or storage not given is the one the
        snapshot recorded; the dim is the snapshot's. The whole file is read and
        checked (checksums, values finite and storable in `storage`, no key twice)
        before the segment is opened: a bad file raises SnapshotError (a value the
        storage cannot hold, InvalidVectorError) and changes nothing. When `name`
        does not exist it is created (with `mode`); when it exists, its limits,
        dim and storage must be these (else ArgumentValueError naming the field)
        and the entries are added to it as puts. Entries expired on disk are
        dropped, the rest keep their remaining TTL (cut to the segment's) and
        their order; walking from the most recent, an entry whose stripe is full
        is left out. Statistics of a segment the load created start at zero.
        `label` is the monitoring label, as the constructor's (checked, like
        `name`, before the file is read)."""
        return segment_load(cls, path, name, max_entries, ttl_seconds, max_memory_mb, storage,
                            mode, label)

    def remove(self, key):
        """Delete `key`; True if a live entry was removed (expired counts as absent)."""
        if type(key) is not CacheKey:
            raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        if self.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        cdef uint64_t h = embc_hash(&self.seg, (<CacheKey>key).ident.digest)
        cdef uint32_t s = embc_stripe_of(&self.seg, h)
        self.lock(s)
        cdef int removed = embc_remove(&self.seg, s, h, (<CacheKey>key).ident.digest, embc_now())
        embc_unlock(&self.seg, s)
        return bool(removed)

    def clear(self):
        """Remove every entry (stripe by stripe; the statistics stay)."""
        cdef uint32_t s
        for s in range(self.seg.L.n_stripes if self.seg.base != NULL else 1):
            self.lock(s)
            embc_clear(&self.seg, s)
            embc_unlock(&self.seg, s)

    def __len__(self):
        cdef uint32_t s
        cdef Py_ssize_t n = 0
        for s in range(self.seg.L.n_stripes if self.seg.base != NULL else 1):
            self.lock(s)
            n += embc_stripe_at(&self.seg, s).size
            embc_unlock(&self.seg, s)
        return n

    def __contains__(self, key):
        """Whether `key` has a live entry (no statistics, no CLOCK bit moved);
        KeyTypeError for a key that is not a CacheKey."""
        if type(key) is not CacheKey:
            raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        if self.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        return self.fetch_row(<CacheKey>key, NULL, self.clock_now(), 0)

    def get_cache_info(self):
        """A CacheInfo: live entries, bounds, exact memory use and the statistics of
        every process attached, summed over the stripes."""
        return segment_info(self)

    def verify(self):
        """Walk every stripe (each locked in turn) checking the segment's invariants
        (each live entry found through the index once, size, free chain, bounds);
        a list of what is broken, empty when the segment is sound."""
        return segment_verify(self)

    @property
    def repairs(self):
        """Stripe repairs made so far (after a lock holder died), by any process."""
        return segment_repairs(self)

    @property
    def max_entries(self):
        """max_entries as the segment was created with."""
        return self.seg.L.max_entries

    @property
    def max_memory_mb(self):
        """max_memory_mb as the segment was created with."""
        return self.max_memory_mb_arg

    @property
    def ttl_seconds(self):
        """ttl_seconds as the segment was created with (None: no TTL)."""
        return self.ttl_seconds_arg

    @property
    def dim(self):
        """The segment's fixed dimension."""
        return self.seg.L.dim

    @property
    def storage(self):
        """The row storage: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"int8"``
        (reads return float32 whatever it is)."""
        return describe_field(&self.seg.L, "storage").strip("'")

    @property
    def capacity(self):
        """Live entries the limits allow: min(max_entries, budget // entry bytes)."""
        return self.seg.L.capacity

    @property
    def stripes(self):
        """Independently locked parts of the segment."""
        return self.seg.L.n_stripes

    # --- what the package above drives it by (embcache/shared/batch.pxi) ----------

    cdef object __weakref__          # the single-flight registry and monitoring hold it weakly
    cdef readonly str name
    """The cache's label in monitoring (embcache.metrics); never part of a key."""
    cdef object flights_registry     # made on first use (flights)

    cdef int named(self, str label) except -1:
        self.name = label
        track_named("cache", self)
        return 0

    def put_batch(self, keys, matrix, *, str what not None="matrix", dim=None):
        """A SharedPutBatch of `matrix`'s rows under `keys`, bound to this cache
        (the protocol of SyncEmbeddingCache.put_batch): keys, shape and dimension
        checked now, nothing stored; ``take()`` checks the values into a private
        copy, ``store()`` stores them. Error messages start with `what`."""
        return SharedPutBatch.create(self, keys, matrix, what, dim)

    def get_batch(self, keys, out=None):
        """A SharedGetBatch for `keys`, bound to this cache (the protocol of
        SyncEmbeddingCache.get_batch): keys and `out` checked now, nothing
        counted until ``read()``."""
        return SharedGetBatch.create(self, keys, out)

    @property
    def flights(self):
        """This process's single-flight registry over the cache
        (embcache.flight.registry.Flights), behind EmbeddingCache.get_or_compute
        and CachedEmbedder; made on first use."""
        return segment_flights(self)

    @property
    def policy(self):
        """The eviction policy: ``"clock"`` (per-stripe CLOCK)."""
        return "clock"

    @property
    def closed(self):
        """True once close() has unmapped the segment from this process."""
        return self.seg.base == NULL

    def __repr__(self):
        if self.seg.base == NULL:
            return f"SharedEmbeddingCache({self.path!r}, closed)"
        return (f"SharedEmbeddingCache({self.path!r}, max_entries={self.seg.L.max_entries}, "
                f"dim={self.seg.L.dim}, storage={self.storage!r}, label={self.name!r})")


include "opening.pxi"
include "lookup.pxi"
include "stats.pxi"
include "flight.pxi"
include "snapshot.pxi"
include "batch.pxi"
