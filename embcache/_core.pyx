# cython: language_level=3
"""The synchronous core of embcache: keys, the slab store, its index and lists.

Data structures (one cache)::

    index (Bucket[2^k])          entries (Entry[capacity])             slabs (Slab[n], one per dim)
    +-------+------+             +------------------------------+      +-------------------------+
    | tag32 | slot |---------->  | fp_lo fp_hi  expires_at      |      | dim=768  rows --------> float32[capacity][768]
    +-------+------+             | recency_prev / recency_next  |      | free_head (chain through
    | empty |  -1  |             | expiry_prev  / expiry_next   |      |   the freed rows)       |
    +-------+------+             | slab, row -------------------+----> | used, high_water, ...   |
                                 +------------------------------+      +-------------------------+

    recency list: recency_head (most recent) <-> ... <-> recency_tail (next LRU victim)
    expiry list:  expiry_head (oldest write, next to expire) <-> ... <-> expiry_tail (newest)
    free slots:   free_slot -> recency_next -> ... -> NO_SLOT

Invariants (checked by SyncEmbeddingCache._check_invariants):
  * every live slot sits in exactly one index cell, in the recency list and in the
    expiry list; every other slot of [0, entry_capacity) is on the free-slot chain;
  * an occupied index cell is reachable from its home cell (tag & mask) without
    crossing an empty cell: deletion shifts cells back, so there are no tombstones;
  * each slab's rows are either used by exactly one live entry, on its free-row
    chain, or at/after high_water;
  * used_bytes == sum over live entries of (dim * 4 + ENTRY_OVERHEAD_BYTES)
    <= budget_bytes, and size <= max_entries;
  * with one TTL for the whole cache, write order is expiry order: expires_at is
    non-decreasing from expiry_head to expiry_tail, so the head is the only entry
    that ever needs checking before a live entry is evicted.

Locking: one lock per cache (_lock.h: a PyMutex on 3.13+, a GIL-guarded flag
before), held for the whole of each operation. No Python code runs while it is
held, apart from allocating the returned float32 array (numpy arrays are not
GC-tracked, so that allocation cannot run a finalizer that re-enters the cache).
A user-supplied clock is read before the lock is taken.
"""

cimport cython
cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast_ITEMS
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.math cimport INFINITY, fabs, fabsf, isfinite
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import hashlib
import math
import numbers
import os

import numpy as np

from embcache._info import CacheInfo
from embcache.errors import (
    DimensionMismatchError,
    EntryTooLargeError,
    InvalidVectorError,
    KeyTypeError,
    VectorTypeError,
)

cnp.import_array()

DEF NO_SLOT = -1
DEF NO_ROW = -1
DEF MIN_INDEX_CELLS = 16
DEF FIRST_ENTRY_SLOTS = 64
# Copies longer than this run without the GIL (the cache lock is still held).
DEF GIL_FREE_COPY_BYTES = 262144
# The largest double that rounds to a finite float32 is just below this.
DEF F32_ROUND_LIMIT = 3.4028235677973366e38

# Bytes of metadata accounted to each live entry: its Entry row plus the most
# index cells one entry can cost (the index keeps 2 to 4 cells per entry slot).
ENTRY_OVERHEAD_BYTES = sizeof(Entry) + 4 * sizeof(Bucket)
cdef Py_ssize_t ENTRY_OVERHEAD = ENTRY_OVERHEAD_BYTES
cdef slot_t MAX_SLOTS = 2 ** 31 - 2

# --- the per-process hash key --------------------------------------------------
# Fingerprints are keyed by a random 128-bit key drawn once per process, so keys
# chosen by an attacker cannot be made to collide in the index.
_HASH_KEY = os.urandom(16)
cdef uint64_t K0 = int.from_bytes(_HASH_KEY[:8], "little")
cdef uint64_t K1 = int.from_bytes(_HASH_KEY[8:], "little")


def hash_key() -> bytes:
    """The 16-byte SipHash key this process uses for key fingerprints."""
    return _HASH_KEY


def _siphash24(bytes key, bytes data, bint out128=False) -> bytes:
    """SipHash-2-4 of `data` under the 16-byte `key` (64- or 128-bit output),
    serialized little-endian as in the specification's test vectors."""
    cdef embcache_sip_state s
    cdef uint64_t out[2]
    if len(key) != 16:
        raise ValueError("a SipHash key is 16 bytes")
    embcache_sip_init(&s, int.from_bytes(key[:8], "little"),
                      int.from_bytes(key[8:], "little"), out128)
    embcache_sip_update(&s, <const char *>data, len(data))
    embcache_sip_final(&s, out)
    result = out[0].to_bytes(8, "little")
    if out128:
        result += out[1].to_bytes(8, "little")
    return result


# --- clock ----------------------------------------------------------------------

cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef double _read_clock(object clock) except? -1.0:
    value = clock()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"clock() must return a number of seconds, got {type(value).__name__}")
    cdef double now
    try:
        now = float(value)
    except OverflowError:
        now = INFINITY
    if not isfinite(now):
        raise ValueError(f"clock() returned {now!r}; it must return finite seconds")
    return now


# --- keys -----------------------------------------------------------------------

cdef inline int _absorb_str(embcache_sip_state *s, str text) except -1:
    cdef Py_ssize_t n
    cdef const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n)
    embcache_sip_update_u64(s, <uint64_t>n)
    embcache_sip_update(s, utf8, <size_t>n)
    return 0


cdef inline str _required_field(object value, str name):
    if not isinstance(value, str):
        raise TypeError(f"CacheKey {name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"CacheKey {name} must be a non-empty str")
    return <str>value


@cython.final
cdef class CacheKey:
    """Immutable, hashable identity of one embedding: which content, which model,
    which chunk.

    `content_hash` and `model_version` are non-empty strings; `chunk_id` is a
    string or None (None and "" are different keys). The key's 128-bit keyed
    fingerprint is computed once, at construction, over the length-prefixed
    UTF-8 encoding of the three fields, so ("a:b", "c") and ("a", "b:c") can
    never meet.
    """

    def __cinit__(self, content_hash, model_version, chunk_id=None):
        self.content_hash = _required_field(content_hash, "content_hash")
        self.model_version = _required_field(model_version, "model_version")
        if chunk_id is not None and not isinstance(chunk_id, str):
            raise TypeError(
                f"CacheKey chunk_id must be a str or None, got {type(chunk_id).__name__}"
            )
        self.chunk_id = chunk_id

        cdef embcache_sip_state s
        cdef uint64_t out[2]
        cdef unsigned char tag
        embcache_sip_init(&s, K0, K1, 1)
        _absorb_str(&s, self.content_hash)
        _absorb_str(&s, self.model_version)
        tag = 0 if chunk_id is None else 1
        embcache_sip_update(&s, &tag, 1)
        if chunk_id is not None:
            _absorb_str(&s, <str>chunk_id)
        embcache_sip_final(&s, out)
        self.fingerprint.lo = out[0]
        self.fingerprint.hi = out[1]

    @classmethod
    def from_text(cls, text, model_version, chunk_id=None):
        """Key for `text` embedded by `model_version`: content_hash is the SHA-256
        hex digest of the text's UTF-8 encoding."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return CacheKey(hashlib.sha256(text.encode("utf-8")).hexdigest(),
                        model_version, chunk_id)

    def _fingerprint(self):
        """(low, high) 64-bit words of this key's fingerprint (for tests and tools)."""
        return (self.fingerprint.lo, self.fingerprint.hi)

    def __hash__(self):
        cdef Py_hash_t h = <Py_hash_t>self.fingerprint.lo
        return -2 if h == -1 else h

    def __eq__(self, other):
        if type(other) is not CacheKey:
            return NotImplemented
        cdef CacheKey o = <CacheKey>other
        return (self.fingerprint.lo == o.fingerprint.lo
                and self.fingerprint.hi == o.fingerprint.hi
                and self.content_hash == o.content_hash
                and self.model_version == o.model_version
                and self.chunk_id == o.chunk_id)

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __repr__(self):
        return (f"CacheKey(content_hash={self.content_hash!r}, "
                f"model_version={self.model_version!r}, chunk_id={self.chunk_id!r})")

    def __reduce__(self):
        return (CacheKey, (self.content_hash, self.model_version, self.chunk_id))


cdef CacheKey _probe_key = CacheKey("probe", "probe")
FINGERPRINT_OFFSET = <char *>&_probe_key.fingerprint - <char *><PyObject *>_probe_key
_probe_key = None


cdef tuple _key_tuple(object keys, str method):
    """`keys` as a tuple of CacheKey (a tuple cannot change under a loop that has
    dropped the GIL). KeyTypeError names the first item that is not a CacheKey."""
    if type(keys) is CacheKey:
        raise KeyTypeError(f"{method} takes a sequence of CacheKey, got a single CacheKey")
    if isinstance(keys, (str, bytes)):
        raise KeyTypeError(f"{method} takes a sequence of CacheKey, got {type(keys).__name__}")
    cdef tuple seq
    try:
        seq = keys if type(keys) is tuple else tuple(keys)
    except TypeError:
        raise KeyTypeError(
            f"{method} takes a sequence of CacheKey, got {type(keys).__name__}") from None
    cdef Py_ssize_t i
    for i in range(len(seq)):
        if type(seq[i]) is not CacheKey:
            raise KeyTypeError(f"keys[{i}] must be a CacheKey, got {type(seq[i]).__name__}")
    return seq


# --- vectors in -------------------------------------------------------------------

cdef cnp.ndarray _real_array(object data, int ndim, str what, str shape_hint):
    """`data` as an aligned, native-order float32 or float64 array of `ndim`
    dimensions: given as is when it already is one, else converted (float64 holds
    every other real dtype exactly). Raises VectorTypeError for data that is not
    real numbers and InvalidVectorError for the wrong number of dimensions;
    touches no cache state."""
    cdef cnp.ndarray arr
    if cnp.PyArray_Check(data):
        arr = <cnp.ndarray>data
    elif isinstance(data, (str, bytes, bytearray)):
        raise VectorTypeError(
            f"{what} must be a {ndim}-D array-like of real numbers, got {type(data).__name__}")
    else:
        try:
            arr = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise InvalidVectorError(
                f"{what} could not be read as a {ndim}-D array of real numbers: {exc}") from None
    cdef int type_num = cnp.PyArray_TYPE(arr)
    if not (cnp.PyTypeNum_ISINTEGER(type_num) or cnp.PyTypeNum_ISFLOAT(type_num)):
        raise VectorTypeError(
            f"{what} must hold real numbers (integer or float dtype), got dtype {(<object>arr).dtype}")
    if cnp.PyArray_NDIM(arr) != ndim:
        raise InvalidVectorError(f"{what} must be {ndim}-D{shape_hint}, got shape {(<object>arr).shape}")
    if ((type_num != cnp.NPY_FLOAT32 and type_num != cnp.NPY_FLOAT64)
            or not cnp.PyArray_ISALIGNED(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)):
        if type_num == cnp.NPY_LONGDOUBLE:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr.astype(np.float64)   # overflow becomes inf, rejected later
        else:
            arr = arr.astype(np.float64)
    return arr


cdef bint _is_empty_sequence(object data):
    """An empty list, tuple or 1-D array: no rows, and a width that cannot be known."""
    if isinstance(data, (list, tuple)):
        return len(data) == 0
    return (cnp.PyArray_Check(data) and cnp.PyArray_NDIM(<cnp.ndarray>data) == 1
            and cnp.PyArray_DIM(<cnp.ndarray>data, 0) == 0)


cdef inline void _describe(cnp.ndarray arr, int axis, Source *src) noexcept:
    """`src` = the values along `axis` of a _real_array result, starting at its data."""
    src.data = <const char *>cnp.PyArray_DATA(arr)
    src.n = cnp.PyArray_DIM(arr, axis)
    src.stride = cnp.PyArray_STRIDE(arr, axis)
    src.is_f64 = cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT64


cdef cnp.ndarray _as_source(object vector, Source *src):
    """Describe `vector` as a strided float32/float64 run (see _real_array).
    Returns the array that owns the memory: keep it alive while src is used."""
    cdef cnp.ndarray arr = _real_array(vector, 1, "vector", "")
    if cnp.PyArray_DIM(arr, 0) == 0:
        raise InvalidVectorError("vector is empty; an embedding needs at least one value")
    _describe(arr, 0, src)
    return arr


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _first_unstorable(const Source *src) noexcept nogil:
    """Index of the first value that is NaN, infinite, or (float64) overflows
    float32; -1 when every value can be stored."""
    cdef Py_ssize_t i
    if not src.is_f64 and src.stride == 4:
        if embcache_f32_all_finite(<const float *>src.data, <size_t>src.n):
            return -1
    elif src.is_f64 and src.stride == 8:
        if embcache_f64_all_storable(<const double *>src.data, <size_t>src.n):
            return -1
    for i in range(src.n):    # strided input, or finding the culprit
        if src.is_f64:
            if not (fabs((<const double *>(src.data + i * src.stride))[0]) < F32_ROUND_LIMIT):
                return i
        elif not (fabsf((<const float *>(src.data + i * src.stride))[0]) <= 3.4028234663852886e38):
            return i
    return -1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _copy_in(float32_t *row, const Source *src) noexcept nogil:
    cdef Py_ssize_t i
    if not src.is_f64 and src.stride == 4:
        memcpy(row, src.data, <size_t>src.n * 4)
    elif src.is_f64 and src.stride == 8:
        embcache_f64_to_f32(row, <const double *>src.data, <size_t>src.n)
    elif src.is_f64:
        for i in range(src.n):
            row[i] = <float32_t>(<const double *>(src.data + i * src.stride))[0]
    else:
        for i in range(src.n):
            row[i] = (<const float *>(src.data + i * src.stride))[0]


cdef object _reject_value(object owner, Py_ssize_t i):
    value = owner[i]
    if math.isnan(value) or math.isinf(value):
        return InvalidVectorError(
            f"vector[{i}] is {value}; embeddings must be finite (no NaN or infinity)")
    return InvalidVectorError(
        f"vector[{i}] = {float(value)!r} overflows float32 (largest finite is 3.4028235e+38)")


cdef inline void _copy_rows(float32_t *dst, const float32_t *src, size_t nbytes) noexcept:
    """memcpy that drops the GIL for long copies (the caller holds the cache lock)."""
    if nbytes >= GIL_FREE_COPY_BYTES:
        with nogil:
            memcpy(dst, src, nbytes)
    else:
        memcpy(dst, src, nbytes)


cdef object _check_count(object value, str name, Py_ssize_t low, Py_ssize_t high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or value > high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return int(value)


cdef object _check_positive_number(object value, str name):
    """`value` as given, once it is a real number > 0 (a number too large for a
    float counts as infinity)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if math.isnan(as_float) or as_float <= 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return value if as_float != math.inf else math.inf


cdef int _check_dim(SyncEmbeddingCache cache, dim_t dim, str what) except -1:
    if cache.fixed_dim and dim != cache.fixed_dim:
        raise DimensionMismatchError(f"{what} dim {dim}, but this cache stores dim {cache.fixed_dim}")
    if dim * 4 + ENTRY_OVERHEAD > cache.budget_bytes:
        raise EntryTooLargeError(
            f"a vector of dim {dim} needs {dim * 4 + ENTRY_OVERHEAD} bytes with metadata, "
            f"more than the whole budget of {cache.budget_bytes} bytes "
            f"(max_memory_mb={cache.max_memory_mb_arg!r})")
    return 0


cdef _raise_mixed(const dim_t *dims, int n_dims):
    named = ", ".join([str(dims[i]) for i in range(min(n_dims, 8))])
    raise DimensionMismatchError(
        f"the keys hold entries of {n_dims} different dimensions ({named}); "
        "one batch must share one dimension")


@cython.final
cdef class PutBatch:
    """A put_many batch that passed validation (opaque; see _prepare_batch)."""
    cdef tuple keys
    cdef object owner          # the array that owns first.data
    cdef Source first          # row 0
    cdef Py_ssize_t row_stride
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t checked   # rows [0, checked) passed _check_batch


cdef inline size_t _slab_bytes(const Slab *slab) noexcept nogil:
    return <size_t>slab.capacity * <size_t>slab.dim * sizeof(float32_t)


# --- the cache --------------------------------------------------------------------

@cython.final
cdef class SyncEmbeddingCache:
    """Thread-safe, synchronous embedding cache: the core behind EmbeddingCache.

    SyncEmbeddingCache(max_entries=100_000, ttl_seconds=None, max_memory_mb=512.0,
                       *, dim=None, clock=None)

    Vectors are stored as float32 rows of a slab, one per distinct dimension,
    each reserving at once every row it may ever need (the OS maps pages in as
    rows are written); with `dim` given, the slab and tables are set up here.
    Least-recently-used entries are evicted when `max_entries` or
    `max_memory_mb` would be exceeded; expired entries are reclaimed first.
    `ttl_seconds` expires an entry that long after its last write (None: never).
    `clock` is a zero-argument callable returning monotonic seconds (tests);
    by default the C monotonic clock is read.
    """

    def __cinit__(self, max_entries=100_000, ttl_seconds=None, max_memory_mb=512.0,
                  *, dim=None, clock=None):
        self.entries = NULL
        self.buckets = NULL
        self.slabs = NULL
        cdef Py_ssize_t max_entries_ = _check_count(max_entries, "max_entries", 1, MAX_SLOTS)
        if ttl_seconds is not None:
            ttl_seconds = _check_positive_number(ttl_seconds, "ttl_seconds")
        mb = _check_positive_number(max_memory_mb, "max_memory_mb")
        if mb == math.inf or mb * 1048576.0 > 2.0 ** 62:
            raise ValueError(f"max_memory_mb must be finite and below 2**42, got {mb!r}")
        cdef dim_t dim_ = 0
        if dim is not None:
            dim_ = _check_count(dim, "dim", 1, 2 ** 40)
        if clock is not None:
            if not callable(clock):
                raise TypeError(f"clock must be a callable returning seconds, got {type(clock).__name__}")
            _read_clock(clock)     # fail now, not at the first put

        self.max_entries = <slot_t>max_entries_
        self.budget_bytes = <Py_ssize_t>math.floor(mb * 1048576.0)
        self.max_memory_mb_arg = max_memory_mb
        self.ttl_arg = ttl_seconds
        self.ttl = 0.0 if ttl_seconds is None or ttl_seconds == math.inf else <double>ttl_seconds
        self.clock = clock
        self.c_clock = clock is None
        # created here, not on first use, so that threads racing on a new cache
        # share one registry (embcache._flight imports this module: import late)
        from embcache._flight import ThreadFlights
        self._flights = ThreadFlights()
        self.fixed_dim = dim_
        self.free_slot = NO_SLOT
        self.recency_head = self.recency_tail = NO_SLOT
        self.expiry_head = self.expiry_tail = NO_SLOT
        self.last_slab = -1

        if dim_:
            if dim_ * 4 + ENTRY_OVERHEAD > self.budget_bytes:
                raise EntryTooLargeError(
                    f"max_memory_mb={max_memory_mb!r} cannot hold even one vector of dim {dim_} "
                    f"({dim_ * 4 + ENTRY_OVERHEAD} bytes with metadata)")
            self._add_slab(dim_)
            self._grow_entries(self.entry_limit)
        else:
            self._resize_index(MIN_INDEX_CELLS)

    def __dealloc__(self):
        cdef int32_t i
        if self.slabs != NULL:
            for i in range(self.n_slabs):
                embcache_slab_release(self.slabs[i].rows, _slab_bytes(&self.slabs[i]))
            free(self.slabs)
            self.slabs = NULL
        free(self.entries)
        self.entries = NULL
        free(self.buckets)
        self.buckets = NULL

    # -- growth (never on the steady-state path: only until the bounds are reached) --

    cdef int _add_slab(self, dim_t dim) except -1:
        """Register a slab for `dim`, reserving every row it may ever need."""
        cdef Slab *grown
        cdef int32_t cap
        if self.n_slabs == self.slab_capacity:
            cap = 4 if self.slab_capacity == 0 else 2 * self.slab_capacity
            grown = <Slab *>realloc(self.slabs, cap * sizeof(Slab))
            if grown == NULL:
                raise MemoryError()
            self.slabs = grown
            self.slab_capacity = cap
        cdef Slab *slab = &self.slabs[self.n_slabs]
        slab.dim = dim
        slab.capacity = <row_t>min(<Py_ssize_t>self.max_entries,
                                   self.budget_bytes // (dim * 4 + ENTRY_OVERHEAD))
        slab.rows = <float32_t *>embcache_slab_reserve(_slab_bytes(slab))
        if slab.rows == NULL:
            raise MemoryError(
                f"could not reserve {_slab_bytes(slab)} bytes for {slab.capacity} rows of dim {dim}")
        slab.high_water = 0
        slab.peak = 0
        slab.free_head = NO_ROW
        slab.used = 0
        self.n_slabs += 1
        self.entry_limit = <slot_t>min(<Py_ssize_t>self.max_entries,
                                       <Py_ssize_t>self.entry_limit + slab.capacity)
        return 0

    cdef int _grow_entries(self, slot_t capacity) except -1:
        cdef Entry *grown
        cdef slot_t i
        if capacity <= self.entry_capacity:
            return 0
        grown = <Entry *>realloc(self.entries, <size_t>capacity * sizeof(Entry))
        if grown == NULL:
            raise MemoryError(f"could not allocate {capacity} entry slots")
        self.entries = grown
        cdef size_t cells = MIN_INDEX_CELLS
        while cells < 2 * <size_t>capacity:
            cells *= 2
        if cells > self.bucket_mask + 1:
            self._resize_index(cells)      # raises before any slot is handed out
        # chain the new slots onto the free list, lowest index first
        for i in range(capacity - 1, self.entry_capacity - 1, -1):
            self.entries[i].recency_next = self.free_slot
            self.free_slot = i
        self.entry_capacity = capacity
        return 0

    cdef int _resize_index(self, size_t cells) except -1:
        cdef Bucket *old = self.buckets
        cdef size_t old_cells = 0 if old == NULL else self.bucket_mask + 1
        cdef Bucket *fresh = <Bucket *>malloc(cells * sizeof(Bucket))
        cdef size_t i, j
        if fresh == NULL:
            raise MemoryError(f"could not allocate an index of {cells} cells")
        memset(fresh, 0xff, cells * sizeof(Bucket))    # slot == NO_SLOT everywhere
        for i in range(old_cells):
            if old[i].slot != NO_SLOT:
                j = old[i].tag & (cells - 1)
                while fresh[j].slot != NO_SLOT:
                    j = (j + 1) & (cells - 1)
                fresh[j] = old[i]
        self.buckets = fresh
        self.bucket_mask = cells - 1
        free(old)
        return 0

    # -- index -----------------------------------------------------------------------

    cdef inline size_t _find_cell(self, const Fingerprint *fp) noexcept nogil:
        """Cell holding `fp`, or the empty cell where probing stopped."""
        cdef uint32_t tag = <uint32_t>fp.lo
        cdef size_t i = tag & self.bucket_mask
        cdef slot_t slot
        while True:
            slot = self.buckets[i].slot
            if slot == NO_SLOT:
                return i
            if (self.buckets[i].tag == tag and self.entries[slot].fp_lo == fp.lo
                    and self.entries[slot].fp_hi == fp.hi):
                return i
            i = (i + 1) & self.bucket_mask

    cdef inline slot_t _find(self, const Fingerprint *fp) noexcept nogil:
        return self.buckets[self._find_cell(fp)].slot

    cdef inline void _index_delete(self, size_t hole) noexcept nogil:
        """Empty cell `hole`, shifting later cells of its cluster back (no tombstones)."""
        cdef size_t mask = self.bucket_mask
        cdef size_t j = hole
        cdef size_t home
        while True:
            j = (j + 1) & mask
            if self.buckets[j].slot == NO_SLOT:
                break
            home = self.buckets[j].tag & mask
            # the cell at j may move to `hole` unless its home lies in (hole, j]
            if ((j - home) & mask) >= ((j - hole) & mask):
                self.buckets[hole] = self.buckets[j]
                hole = j
        self.buckets[hole].slot = NO_SLOT

    # -- intrusive lists ---------------------------------------------------------------

    cdef inline void _recency_unlink(self, slot_t s) noexcept nogil:
        cdef Entry *e = &self.entries[s]
        if e.recency_prev != NO_SLOT:
            self.entries[e.recency_prev].recency_next = e.recency_next
        else:
            self.recency_head = e.recency_next
        if e.recency_next != NO_SLOT:
            self.entries[e.recency_next].recency_prev = e.recency_prev
        else:
            self.recency_tail = e.recency_prev

    cdef inline void _recency_push_head(self, slot_t s) noexcept nogil:
        cdef Entry *e = &self.entries[s]
        e.recency_prev = NO_SLOT
        e.recency_next = self.recency_head
        if self.recency_head != NO_SLOT:
            self.entries[self.recency_head].recency_prev = s
        else:
            self.recency_tail = s
        self.recency_head = s

    cdef inline void _expiry_unlink(self, slot_t s) noexcept nogil:
        cdef Entry *e = &self.entries[s]
        if e.expiry_prev != NO_SLOT:
            self.entries[e.expiry_prev].expiry_next = e.expiry_next
        else:
            self.expiry_head = e.expiry_next
        if e.expiry_next != NO_SLOT:
            self.entries[e.expiry_next].expiry_prev = e.expiry_prev
        else:
            self.expiry_tail = e.expiry_prev

    cdef inline void _expiry_push_tail(self, slot_t s) noexcept nogil:
        cdef Entry *e = &self.entries[s]
        e.expiry_next = NO_SLOT
        e.expiry_prev = self.expiry_tail
        if self.expiry_tail != NO_SLOT:
            self.entries[self.expiry_tail].expiry_next = s
        else:
            self.expiry_head = s
        self.expiry_tail = s

    # -- entries -----------------------------------------------------------------------

    cdef inline bint _expired(self, slot_t s, double now) noexcept nogil:
        return self.entries[s].expires_at <= now

    cdef inline float32_t *_row_ptr(self, slot_t s) noexcept nogil:
        cdef Entry *e = &self.entries[s]
        cdef Slab *slab = &self.slabs[e.slab]
        return slab.rows + <size_t>e.row * <size_t>slab.dim

    cdef void _discard(self, slot_t s) noexcept nogil:
        """Remove live entry `s` from the index, both lists, its slab and the accounting."""
        cdef Entry *e = &self.entries[s]
        cdef Fingerprint fp
        fp.lo = e.fp_lo
        fp.hi = e.fp_hi
        self._index_delete(self._find_cell(&fp))
        self._recency_unlink(s)
        self._expiry_unlink(s)
        cdef Slab *slab = &self.slabs[e.slab]
        # the freed row carries the free-row chain in its first float's bytes
        (<row_t *>(slab.rows + <size_t>e.row * <size_t>slab.dim))[0] = slab.free_head
        slab.free_head = e.row
        slab.used -= 1
        self.used_bytes -= slab.dim * 4 + ENTRY_OVERHEAD
        self.size -= 1
        e.recency_next = self.free_slot
        self.free_slot = s

    cdef inline slot_t _victim(self, double now) noexcept nogil:
        """The eviction policy: the oldest write if it has expired, else the LRU entry."""
        if self.ttl > 0 and self.expiry_head != NO_SLOT and self._expired(self.expiry_head, now):
            return self.expiry_head
        return self.recency_tail

    cdef void _make_room(self, Py_ssize_t need, double now) noexcept nogil:
        cdef slot_t victim
        while self.size >= self.max_entries or self.used_bytes + need > self.budget_bytes:
            victim = self._victim(now)
            if self.ttl > 0 and self._expired(victim, now):
                self.expirations += 1
            else:
                self.evictions += 1
            self._discard(victim)

    cdef void _purge_expired(self, double now) noexcept nogil:
        if self.ttl <= 0:
            return
        while self.expiry_head != NO_SLOT and self._expired(self.expiry_head, now):
            self.expirations += 1
            self._discard(self.expiry_head)

    cdef int32_t _slab_for(self, dim_t dim) noexcept nogil:
        cdef int32_t i
        if self.last_slab >= 0 and self.slabs[self.last_slab].dim == dim:
            return self.last_slab
        for i in range(self.n_slabs):
            if self.slabs[i].dim == dim:
                return i
        return -1

    cdef int _reserve(self, Py_ssize_t count) except -1:
        """Grow the entry table now, before anything is evicted, so that `count`
        new entries will find free slots (or the table is at its limit, where
        making room frees one): a failed allocation then changes nothing.
        Slabs need nothing: each reserved all its rows when it was added."""
        cdef Py_ssize_t want = min(<Py_ssize_t>self.entry_limit, <Py_ssize_t>self.size + count)
        if want > self.entry_capacity:
            self._grow_entries(<slot_t>min(<Py_ssize_t>self.entry_limit,
                                           max(want, <Py_ssize_t>FIRST_ENTRY_SLOTS,
                                               2 * <Py_ssize_t>self.entry_capacity)))
        return 0

    cdef inline double _now_locked(self, double given) noexcept nogil:
        if self.ttl <= 0:
            return 0.0
        if self.c_clock:
            return _monotonic()
        # A user clock is read before the lock is taken, so a thread may arrive
        # here with an older reading than one already used: never go back in time
        # (write order must stay expiry order).
        if given < self.last_now:
            return self.last_now
        self.last_now = given
        return given

    cdef inline double _now_unlocked(self) except? -1.0:
        if self.ttl > 0 and not self.c_clock:
            return _read_clock(self.clock)
        return 0.0

    cdef int32_t _prepare_put(self, dim_t dim, Py_ssize_t count) except -2:
        """Everything a put of `count` vectors of `dim` may need to allocate, done
        before anything changes: the slab for `dim` and enough free entry slots.
        Returns the slab index. After it, _store cannot fail."""
        cdef int32_t slab_index = self._slab_for(dim)
        if slab_index < 0:
            self._add_slab(dim)
            slab_index = self.n_slabs - 1
        self._reserve(count)
        return slab_index

    cdef void _store(self, const Fingerprint *fp, const Source *src, int32_t slab_index,
                     double now) noexcept nogil:
        """Store one validated vector (the slab and slots were prepared by _prepare_put)."""
        cdef dim_t dim = src.n
        cdef Py_ssize_t need = dim * 4 + ENTRY_OVERHEAD
        cdef size_t cell = self._find_cell(fp)
        cdef slot_t s = self.buckets[cell].slot
        cdef Entry *e
        cdef Slab *slab
        cdef row_t row

        if s != NO_SLOT:
            if self.ttl > 0 and self._expired(s, now):
                self.expirations += 1
            else:
                self.overwrites += 1
            if self.entries[s].slab == slab_index:
                # same key, same dimension: rewrite the row in place
                _copy_in(self._row_ptr(s), src)
                self.entries[s].expires_at = now + self.ttl if self.ttl > 0 else INFINITY
                self._recency_unlink(s)
                self._recency_push_head(s)
                self._expiry_unlink(s)
                self._expiry_push_tail(s)
                self.puts += 1
                return
            # same key, new dimension (only when dim is not fixed): the old vector goes
            self._discard(s)
        self._make_room(need, now)

        # take a slot and a row; _prepare_put and _make_room guarantee both exist
        s = self.free_slot
        self.free_slot = self.entries[s].recency_next
        slab = &self.slabs[slab_index]
        if slab.free_head != NO_ROW:
            row = slab.free_head
            slab.free_head = (<row_t *>(slab.rows + <size_t>row * <size_t>dim))[0]
        else:
            row = slab.high_water
            slab.high_water += 1
        slab.used += 1
        self.last_slab = slab_index

        e = &self.entries[s]
        e.fp_lo = fp.lo
        e.fp_hi = fp.hi
        e.expires_at = now + self.ttl if self.ttl > 0 else INFINITY
        e.slab = slab_index
        e.row = row
        _copy_in(slab.rows + <size_t>row * <size_t>dim, src)
        self._recency_push_head(s)
        self._expiry_push_tail(s)
        # the table may have shifted while room was made: probe again for a free cell
        cell = self._find_cell(fp)
        self.buckets[cell].tag = <uint32_t>fp.lo
        self.buckets[cell].slot = s
        self.size += 1
        self.used_bytes += need
        self.puts += 1

    cdef void _store_rows(self, PyObject **keys, const Source *first, Py_ssize_t n,
                          Py_ssize_t row_stride, int32_t slab_index, double now) noexcept nogil:
        """put_many's loop: row i of a strided matrix under key i."""
        cdef Source src = first[0]
        cdef Py_ssize_t i
        for i in range(n):
            src.data = first.data + i * row_stride
            self._store(_key_fingerprint(keys[i]), &src, slab_index, now)

    cdef dim_t _batch_dim(self, PyObject **keys, Py_ssize_t n, double now,
                          dim_t *dims, int *n_dims) noexcept nogil:
        """get_many's first pass, which changes nothing: the dimension shared by the
        live entries of `keys` (0 when none is live). Distinct dimensions found go to
        `dims` (at most 8 are recorded) and their count to n_dims."""
        cdef Py_ssize_t i
        cdef slot_t s
        cdef dim_t d
        cdef int j
        n_dims[0] = 0
        for i in range(n):
            s = self._find(_key_fingerprint(keys[i]))
            if s == NO_SLOT or (self.ttl > 0 and self._expired(s, now)):
                continue
            d = self.slabs[self.entries[s].slab].dim
            for j in range(n_dims[0]):
                if dims[j] == d:
                    break
            else:
                if n_dims[0] < 8:
                    dims[n_dims[0]] = d
                n_dims[0] += 1
        return dims[0] if n_dims[0] else 0

    cdef void _copy_out_rows(self, PyObject **keys, Py_ssize_t n, float32_t *matrix, dim_t dim,
                             cnp.npy_bool *found, double now) noexcept nogil:
        """get_many's second pass: copy hits (all of dimension `dim`), zero misses."""
        cdef Py_ssize_t i
        cdef slot_t s
        cdef float32_t *dst
        for i in range(n):
            dst = matrix + <size_t>i * <size_t>dim
            s = self._find(_key_fingerprint(keys[i]))
            if s != NO_SLOT and self.ttl > 0 and self._expired(s, now):
                self.expirations += 1
                self._discard(s)
                s = NO_SLOT
            if s == NO_SLOT:
                self.misses += 1
                found[i] = 0
                memset(dst, 0, <size_t>dim * 4)
                continue
            self.hits += 1
            found[i] = 1
            memcpy(dst, self._row_ptr(s), <size_t>dim * 4)
            if self.recency_head != s:
                self._recency_unlink(s)
                self._recency_push_head(s)

    # -- public API --------------------------------------------------------------------

    def put(self, key, vector):
        """Store a float32 copy of `vector` under `key`.

        `vector` is any 1-D array-like of real numbers (lists, tuples, any real
        dtype, any strides); the caller may reuse its buffer at once. Overwriting
        a key replaces the vector, renews its TTL and makes it most recent. When
        the cache is full (entries or memory), expired entries go first, then
        least-recently-used ones. A rejected call leaves the cache unchanged:
        KeyTypeError (a TypeError) for a key that is not a CacheKey,
        VectorTypeError (TypeError) for non-numeric data, InvalidVectorError
        (ValueError) for a vector that is not 1-D, empty, or holds NaN/inf,
        DimensionMismatchError for a dimension other than the fixed `dim`, and
        EntryTooLargeError when one entry exceeds the whole memory budget.
        """
        if type(key) is not CacheKey:
            raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        cdef Source src
        owner = _as_source(vector, &src)
        cdef Py_ssize_t bad = _first_unstorable(&src)
        if bad >= 0:
            raise _reject_value(owner, bad)
        _check_dim(self, src.n, "vector has")
        cdef double given = self._now_unlocked()
        cdef int32_t slab_index
        embcache_lock_acquire(&self.lock)
        try:
            slab_index = self._prepare_put(src.n, 1)
            self._store(&(<CacheKey>key).fingerprint, &src, slab_index, self._now_locked(given))
        finally:
            embcache_lock_release(&self.lock)

    def get(self, key):
        """The vector stored under `key` as a new float32 array of shape (dim,),
        owned by the caller; None on a miss. A hit makes the entry most recent
        (its TTL is unchanged); an expired entry is a miss and is reclaimed."""
        if type(key) is not CacheKey:
            raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        cdef double given = self._now_unlocked()
        cdef double now
        cdef slot_t s
        cdef cnp.npy_intp dim
        cdef cnp.ndarray out
        embcache_lock_acquire(&self.lock)
        try:
            s = self._find(&(<CacheKey>key).fingerprint)
            if s == NO_SLOT:
                self.misses += 1
                return None
            now = self._now_locked(given)
            if self.ttl > 0 and self._expired(s, now):
                self.expirations += 1
                self.misses += 1
                self._discard(s)
                return None
            dim = self.slabs[self.entries[s].slab].dim
            out = cnp.PyArray_SimpleNew(1, &dim, cnp.NPY_FLOAT32)
            _copy_rows(<float32_t *>cnp.PyArray_DATA(out), self._row_ptr(s), <size_t>dim * 4)
            self.hits += 1
            if self.recency_head != s:
                self._recency_unlink(s)
                self._recency_push_head(s)
            return out
        finally:
            embcache_lock_release(&self.lock)

    def get_many(self, keys, out=None):
        """Look up many keys at once: returns ``(matrix, found)``.

        `matrix` is a C-contiguous float32 array of shape (len(keys), dim) whose
        row i is the vector of keys[i], or zeros when keys[i] missed; `found` is a
        bool array of shape (len(keys),). Duplicated keys are fine; every key
        counts as one hit or one miss, and hits become most recent. When nothing
        fixes the dimension (no hit, no fixed `dim`, no `out`), matrix has shape
        (len(keys), 0). With `out` (a writable, C-contiguous float32 array of shape
        (len(keys), dim)) the rows are written there and `out` is returned.

        Raises KeyTypeError for a key that is not a CacheKey, ValueError
        (DimensionMismatchError) when live entries of several dimensions are
        requested together (naming them) or `out` has the wrong dimension, and
        TypeError/ValueError for a bad `out`; the cache is then unchanged.
        Row copies of large batches run without the GIL.
        """
        cdef tuple seq = _key_tuple(keys, "get_many")
        cdef Py_ssize_t n = len(seq)
        cdef cnp.ndarray matrix = None
        cdef dim_t out_dim = -1
        if out is not None:
            out_dim = self._check_out(out, n)
            matrix = <cnp.ndarray>out
        cdef cnp.npy_intp n_keys = n
        cdef cnp.ndarray found = cnp.PyArray_ZEROS(1, &n_keys, cnp.NPY_BOOL, 0)
        cdef double given = self._now_unlocked()
        cdef double now
        cdef PyObject **items = PySequence_Fast_ITEMS(seq)
        cdef dim_t dims[8]
        cdef int n_dims = 0
        cdef dim_t dim
        cdef cnp.npy_intp shape[2]
        embcache_lock_acquire(&self.lock)
        try:
            now = self._now_locked(given)
            dim = self._batch_dim(items, n, now, dims, &n_dims)
            if n_dims <= 1 and not (out_dim >= 0 and n_dims == 1 and dim != out_dim):
                if matrix is None:
                    shape[0] = n
                    if not dim:
                        dim = self.fixed_dim
                    shape[1] = dim
                    matrix = cnp.PyArray_EMPTY(2, shape, cnp.NPY_FLOAT32, 0)
                else:
                    dim = out_dim
                if dim and <size_t>n * <size_t>dim * 4 >= GIL_FREE_COPY_BYTES:
                    with nogil:
                        self._copy_out_rows(items, n, <float32_t *>cnp.PyArray_DATA(matrix), dim,
                                            <cnp.npy_bool *>cnp.PyArray_DATA(found), now)
                else:
                    self._copy_out_rows(items, n, <float32_t *>cnp.PyArray_DATA(matrix), dim,
                                        <cnp.npy_bool *>cnp.PyArray_DATA(found), now)
        finally:
            embcache_lock_release(&self.lock)
        if n_dims > 1:
            _raise_mixed(dims, n_dims)
        if out_dim >= 0 and n_dims == 1 and dim != out_dim:
            raise DimensionMismatchError(f"out has {out_dim} columns, but the entries have dim {dim}")
        return matrix, found

    def put_many(self, keys, matrix):
        """Store row i of `matrix` under keys[i], as if by put() in order.

        `matrix` is any (len(keys), dim) real array-like (any real dtype, any
        strides). Everything is validated before anything is stored, so a bad
        row stores nothing; errors are those of put(), with the row named. Rows
        are copied without the GIL when the batch is large.
        """
        cdef PutBatch batch = self._prepare_batch(keys, matrix)
        self._check_batch(batch, 0, batch.n)
        self._store_batch(batch, 0, batch.n)

    def _prepare_batch(self, keys, matrix):
        """Check a put_many batch's keys, shape, dtype and dimension, converting the
        matrix if needed; its values are checked by _check_batch and it is stored by
        _store_batch (the async facade runs both in slices). Stores nothing."""
        cdef PutBatch batch = PutBatch.__new__(PutBatch)
        batch.keys = _key_tuple(keys, "put_many")
        cdef Py_ssize_t n = len(batch.keys)
        batch.n = n
        if n == 0 and _is_empty_sequence(matrix):
            matrix = np.empty((0, 0), dtype=np.float32)      # put_many([], []): nothing to do
        cdef cnp.ndarray m = _real_array(matrix, 2, "matrix", " (len(keys), dim)")
        if cnp.PyArray_DIM(m, 0) != n:
            raise InvalidVectorError(f"matrix has {cnp.PyArray_DIM(m, 0)} rows for {n} keys")
        if n and cnp.PyArray_DIM(m, 1) == 0:
            raise InvalidVectorError("matrix rows are empty; an embedding needs at least one value")
        batch.owner = m
        _describe(m, 1, &batch.first)
        batch.row_stride = cnp.PyArray_STRIDE(m, 0)
        if n:
            _check_dim(self, batch.first.n, "matrix rows have")
        return batch

    def _check_batch(self, PutBatch batch not None, Py_ssize_t start, Py_ssize_t stop):
        """Check that rows [start, stop) hold only storable values; rows must be
        checked in order, and only checked rows can be stored."""
        if start != batch.checked or not start <= stop <= batch.n:
            raise ValueError(f"rows [{start}, {stop}) do not continue the checked rows [0, {batch.checked})")
        cdef Source row = batch.first
        cdef Py_ssize_t i, bad
        for i in range(start, stop):
            row.data = batch.first.data + i * batch.row_stride
            bad = _first_unstorable(&row)
            if bad >= 0:
                err = _reject_value(batch.owner[i], bad)
                raise type(err)(f"matrix row {i}: {err}")
        batch.checked = stop

    def _store_batch(self, PutBatch batch not None, Py_ssize_t start, Py_ssize_t stop):
        """Store rows [start, stop) of a batch validated by _prepare_batch."""
        if not (0 <= start <= stop <= batch.checked):
            raise ValueError(f"rows [{start}, {stop}) are not among the checked rows [0, {batch.checked})")
        if start == stop:
            return
        cdef Source first = batch.first
        first.data = batch.first.data + start * batch.row_stride
        cdef Py_ssize_t count = stop - start
        cdef double given = self._now_unlocked()
        cdef double now
        cdef int32_t slab_index
        cdef PyObject **items = PySequence_Fast_ITEMS(batch.keys) + start
        embcache_lock_acquire(&self.lock)
        try:
            now = self._now_locked(given)
            slab_index = self._prepare_put(first.n, count)
            if <size_t>count * <size_t>first.n * 4 >= GIL_FREE_COPY_BYTES:
                with nogil:
                    self._store_rows(items, &first, count, batch.row_stride, slab_index, now)
            else:
                self._store_rows(items, &first, count, batch.row_stride, slab_index, now)
        finally:
            embcache_lock_release(&self.lock)

    def _check_out(self, out, Py_ssize_t n):
        """The dimension of a get_many `out` buffer for `n` keys, once it is a
        writable, C-contiguous, native float32 (n, dim) array that fits the cache;
        TypeError / ValueError (DimensionMismatchError) say what is wrong."""
        if not cnp.PyArray_Check(out):
            raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
        cdef cnp.ndarray arr = <cnp.ndarray>out
        if (cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32 or not cnp.PyArray_ISNOTSWAPPED(arr)
                or cnp.PyArray_NDIM(arr) != 2 or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
                or not cnp.PyArray_ISWRITEABLE(arr)):
            raise TypeError(
                "out must be a writable, C-contiguous, native-order float32 array of shape "
                f"(len(keys), dim); got dtype {out.dtype}, shape {out.shape}, "
                f"C-contiguous {bool(cnp.PyArray_IS_C_CONTIGUOUS(arr))}, "
                f"writable {bool(cnp.PyArray_ISWRITEABLE(arr))}")
        if cnp.PyArray_DIM(arr, 0) != n:
            raise ValueError(f"out has {cnp.PyArray_DIM(arr, 0)} rows for {n} keys")
        cdef dim_t out_dim = cnp.PyArray_DIM(arr, 1)
        if self.fixed_dim and out_dim != self.fixed_dim:
            raise DimensionMismatchError(
                f"out has {out_dim} columns, but this cache stores dim {self.fixed_dim}")
        return out_dim

    def _as_keys(self, keys):
        """`keys` as a tuple of CacheKey; KeyTypeError names the first bad item."""
        return _key_tuple(keys, "get_many")

    def _live_dim(self, keys):
        """The dimension shared by the live entries of `keys`, 0 if none is live;
        DimensionMismatchError if they differ. Changes nothing, counts nothing."""
        cdef tuple seq = _key_tuple(keys, "get_many")
        cdef double given = self._now_unlocked()
        cdef dim_t dims[8]
        cdef int n_dims = 0
        cdef dim_t dim
        embcache_lock_acquire(&self.lock)
        try:
            dim = self._batch_dim(PySequence_Fast_ITEMS(seq), len(seq), self._now_locked(given),
                                  dims, &n_dims)
        finally:
            embcache_lock_release(&self.lock)
        if n_dims > 1:
            _raise_mixed(dims, n_dims)
        return dim

    def get_or_compute(self, keys, compute):
        """The (len(keys), dim) float32 matrix for `keys`, computing only what is
        missing: ``compute(missing_keys)`` is called at most once, with the
        distinct missing keys in order, and must return an (m, dim) array-like;
        its rows are stored. Single flight: a key another thread is already
        computing is waited for, not computed again. If compute raises, nothing
        is stored and every waiter for those keys gets the exception."""
        return self._flights.get_or_compute(self, keys, compute)

    def remove(self, key):
        """Delete `key`; True if a live entry was removed (expired counts as absent)."""
        if type(key) is not CacheKey:
            raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        cdef double given = self._now_unlocked()
        cdef slot_t s
        embcache_lock_acquire(&self.lock)
        try:
            s = self._find(&(<CacheKey>key).fingerprint)
            if s == NO_SLOT:
                return False
            if self.ttl > 0 and self._expired(s, self._now_locked(given)):
                self.expirations += 1
                self._discard(s)
                return False
            self.removals += 1
            self._discard(s)
            return True
        finally:
            embcache_lock_release(&self.lock)

    def clear(self):
        """Remove every entry. Statistics (hits, misses, ...) are kept. A cache
        with a fixed `dim` keeps its slab's memory for refilling; one without
        returns its slabs to the OS."""
        cdef slot_t i
        embcache_lock_acquire(&self.lock)
        try:
            memset(self.buckets, 0xff, (self.bucket_mask + 1) * sizeof(Bucket))
            self.free_slot = NO_SLOT
            for i in range(self.entry_capacity - 1, -1, -1):
                self.entries[i].recency_next = self.free_slot
                self.free_slot = i
            self.recency_head = self.recency_tail = NO_SLOT
            self.expiry_head = self.expiry_tail = NO_SLOT
            self.size = 0
            self.used_bytes = 0
            if self.fixed_dim:
                # keep the written pages: refilling reuses warm memory, as a
                # general-purpose allocator would (peak keeps them accounted)
                self.slabs[0].peak = max(self.slabs[0].peak, self.slabs[0].high_water)
                self.slabs[0].high_water = 0
                self.slabs[0].free_head = NO_ROW
                self.slabs[0].used = 0
            else:
                for i in range(self.n_slabs):
                    embcache_slab_release(self.slabs[i].rows, _slab_bytes(&self.slabs[i]))
                self.n_slabs = 0
                self.last_slab = -1
                self.entry_limit = 0
                free(self.entries)
                self.entries = NULL
                self.entry_capacity = 0
                self.free_slot = NO_SLOT
                self._resize_index(MIN_INDEX_CELLS)
        finally:
            embcache_lock_release(&self.lock)

    def __len__(self):
        """Live entries (expired ones are reclaimed first and not counted)."""
        cdef double given = self._now_unlocked()
        embcache_lock_acquire(&self.lock)
        try:
            self._purge_expired(self._now_locked(given))
            return self.size
        finally:
            embcache_lock_release(&self.lock)

    def __contains__(self, key):
        """Whether `key` has a live entry. No stats, no recency change."""
        if type(key) is not CacheKey:
            raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        cdef double given = self._now_unlocked()
        cdef slot_t s
        embcache_lock_acquire(&self.lock)
        try:
            s = self._find(&(<CacheKey>key).fingerprint)
            if s == NO_SLOT:
                return False
            return not (self.ttl > 0 and self._expired(s, self._now_locked(given)))
        finally:
            embcache_lock_release(&self.lock)

    def get_cache_info(self):
        """A CacheInfo snapshot: size, bounds, exact memory accounting and stats."""
        cdef double given = self._now_unlocked()
        cdef int32_t i, n_dims = 0
        cdef Py_ssize_t allocated, reserved = 0, size, used
        cdef unsigned long long hits, misses, evictions, expirations, puts, overwrites, removals
        cdef dim_t *live_dims
        # Only C values are gathered under the lock: creating Python objects there
        # could start a garbage collection whose finalizers re-enter the cache.
        embcache_lock_acquire(&self.lock)
        try:
            self._purge_expired(self._now_locked(given))
            allocated = (<Py_ssize_t>self.entry_capacity * sizeof(Entry)
                         + <Py_ssize_t>(self.bucket_mask + 1) * sizeof(Bucket)
                         + <Py_ssize_t>self.slab_capacity * sizeof(Slab))
            live_dims = <dim_t *>malloc((self.n_slabs + 1) * sizeof(dim_t))
            for i in range(self.n_slabs):
                # rows past the highest ever handed out were never written, so never mapped in
                allocated += (<Py_ssize_t>max(self.slabs[i].peak, self.slabs[i].high_water)
                              * self.slabs[i].dim * 4)
                reserved += <Py_ssize_t>_slab_bytes(&self.slabs[i])
                if self.slabs[i].used and live_dims != NULL:
                    live_dims[n_dims] = self.slabs[i].dim
                    n_dims += 1
            size = self.size
            used = self.used_bytes
            hits, misses = self.hits, self.misses
            evictions, expirations = self.evictions, self.expirations
            puts, overwrites, removals = self.puts, self.overwrites, self.removals
        finally:
            embcache_lock_release(&self.lock)
        if live_dims == NULL:
            raise MemoryError()
        dims = sorted([live_dims[i] for i in range(n_dims)])
        free(live_dims)
        lookups = hits + misses
        return CacheInfo(
            size=size,
            max_entries=self.max_entries,
            memory_usage_bytes=used,
            memory_usage_mb=used / 1048576.0,
            max_memory_mb=self.max_memory_mb_arg,
            hits=hits,
            misses=misses,
            hit_rate=hits / lookups if lookups else 0.0,
            evictions=evictions,
            expirations=expirations,
            puts=puts,
            overwrites=overwrites,
            removals=removals,
            ttl_seconds=self.ttl_arg,
            dim=self.fixed_dim or None,
            dims=tuple(dims),
            entry_overhead_bytes=ENTRY_OVERHEAD,
            memory_budget_bytes=self.budget_bytes,
            allocated_bytes=allocated,
            reserved_bytes=reserved,
        )

    @property
    def max_entries(self):
        """The bound on the number of entries."""
        return self.max_entries

    @property
    def max_memory_mb(self):
        """The memory budget in MiB, as given."""
        return self.max_memory_mb_arg

    @property
    def ttl_seconds(self):
        """Seconds an entry lives after its last write, or None."""
        return self.ttl_arg

    @property
    def dim(self):
        """The fixed vector dimension, or None when any dimension is accepted."""
        return self.fixed_dim or None

    def __repr__(self):
        return (f"SyncEmbeddingCache(size={self.size}, max_entries={self.max_entries}, "
                f"memory={self.used_bytes} of {self.budget_bytes} bytes, "
                f"ttl_seconds={self.ttl_arg!r}, dim={self.fixed_dim or None})")

    # -- debugging ---------------------------------------------------------------------

    def _check_invariants(self):
        """Walk every structure and raise AssertionError on the first broken
        invariant (index <-> lists <-> free slots <-> slab rows <-> accounting).
        O(capacity); for tests and debugging."""
        embcache_lock_acquire(&self.lock)
        try:
            self._check_locked()
        finally:
            embcache_lock_release(&self.lock)

    cdef _check_locked(self):
        cdef slot_t s, prev, n
        cdef size_t c, home, k
        cdef Py_ssize_t used = 0
        cdef int32_t i
        cdef Entry *e
        cdef Slab *slab
        cdef Fingerprint fp
        cap = self.entry_capacity
        state = bytearray(cap)        # 0 unseen, 1 live (recency), 2 free
        # recency list
        n = 0
        prev = NO_SLOT
        s = self.recency_head
        while s != NO_SLOT:
            _require(0 <= s < cap, f"recency list reaches slot {s} outside [0, {cap})")
            _require(state[s] == 0, f"recency list visits slot {s} twice")
            _require(self.entries[s].recency_prev == prev, f"slot {s}: recency_prev broken")
            state[s] = 1
            n += 1
            prev = s
            s = self.entries[s].recency_next
        _require(self.recency_tail == prev, "recency_tail is not the last slot of the list")
        _require(n == self.size, f"recency list holds {n} entries, size is {self.size}")
        # expiry list: the same entries, in non-decreasing expiry order
        n = 0
        prev = NO_SLOT
        s = self.expiry_head
        while s != NO_SLOT:
            _require(0 <= s < cap and state[s] == 1, f"expiry list holds slot {s} not in the recency list")
            _require(self.entries[s].expiry_prev == prev, f"slot {s}: expiry_prev broken")
            if prev != NO_SLOT:
                _require(self.entries[prev].expires_at <= self.entries[s].expires_at,
                         "expiry list is not in expiry order")
            state[s] = 3
            n += 1
            prev = s
            s = self.entries[s].expiry_next
        _require(self.expiry_tail == prev, "expiry_tail is not the last slot of the list")
        _require(n == self.size, f"expiry list holds {n} entries, size is {self.size}")
        # free slots
        s = self.free_slot
        n = 0
        while s != NO_SLOT:
            _require(0 <= s < cap and state[s] == 0, f"free chain holds slot {s} that is live or repeated")
            state[s] = 2
            n += 1
            s = self.entries[s].recency_next
        _require(n + self.size == cap, f"{n} free + {self.size} live slots != capacity {cap}")
        # index
        n = 0
        for c in range(self.bucket_mask + 1):
            s = self.buckets[c].slot
            if s == NO_SLOT:
                continue
            n += 1
            _require(0 <= s < cap and state[s] == 3, f"index cell {c} points at slot {s} that is not live")
            _require(self.buckets[c].tag == <uint32_t>self.entries[s].fp_lo, f"index cell {c}: tag mismatch")
            home = self.buckets[c].tag & self.bucket_mask
            k = home
            while k != c:
                _require(self.buckets[k].slot != NO_SLOT, f"index cell {c} unreachable from its home {home}")
                k = (k + 1) & self.bucket_mask
        _require(n == self.size, f"index holds {n} cells, size is {self.size}")
        _require(2 * <size_t>cap <= self.bucket_mask + 1, "index has fewer than 2 cells per entry slot")
        # slabs: rows used by live entries, the free-row chains, accounting
        rows_used = [set() for _ in range(self.n_slabs)]
        for s in range(cap):
            if state[s] != 3:
                continue
            e = &self.entries[s]
            _require(0 <= e.slab < self.n_slabs, f"slot {s} names slab {e.slab}")
            _require(0 <= e.row < self.slabs[e.slab].high_water, f"slot {s} names row {e.row} past high water")
            _require(e.row not in rows_used[e.slab], f"row {e.row} of slab {e.slab} used twice")
            rows_used[e.slab].add(e.row)
            used += self.slabs[e.slab].dim * 4 + ENTRY_OVERHEAD
            fp.lo = e.fp_lo
            fp.hi = e.fp_hi
            _require(self._find(&fp) == s, f"slot {s} is not found by its fingerprint")
        entry_limit = 0
        for i in range(self.n_slabs):
            slab = &self.slabs[i]
            _require(slab.used == len(rows_used[i]), f"slab {i}: used {slab.used} != {len(rows_used[i])} live rows")
            _require(slab.high_water <= slab.capacity, f"slab {i}: high water past capacity")
            free_rows = set()
            r = slab.free_head
            while r != NO_ROW:
                _require(0 <= r < slab.high_water and r not in free_rows and r not in rows_used[i],
                         f"slab {i}: free-row chain is broken at row {r}")
                free_rows.add(r)
                r = (<row_t *>(slab.rows + <size_t>r * <size_t>slab.dim))[0]
            _require(len(free_rows) + slab.used == slab.high_water,
                     f"slab {i}: {len(free_rows)} free + {slab.used} used rows != high water {slab.high_water}")
            entry_limit += slab.capacity
        _require(used == self.used_bytes, f"accounted {self.used_bytes} bytes, entries hold {used}")
        _require(self.used_bytes <= self.budget_bytes, "memory accounting exceeds the budget")
        _require(self.size <= self.max_entries, "more entries than max_entries")
        _require(self.entry_limit == min(entry_limit, self.max_entries), "entry_limit is stale")
        _require(self.entry_capacity <= self.entry_limit, "entry table larger than its limit")


cdef inline _require(bint condition, message):
    if not condition:
        raise AssertionError(message)
