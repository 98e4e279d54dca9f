# Declarations of the core: the C layout of the cache and its key.
# Behaviour lives in _core.pyx; the typed public surface in _core.pyi.

cimport cython
cimport numpy as cnp
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, uint32_t, uint64_t

# --- central typedefs -------------------------------------------------------
ctypedef float float32_t
ctypedef int32_t slot_t        # index of an entry slot in the entry table
ctypedef int32_t row_t         # index of a row in a slab
ctypedef Py_ssize_t dim_t      # length of a vector

cdef extern from "_siphash.h":
    ctypedef struct embcache_sip_state:
        pass
    void embcache_sip_init(embcache_sip_state *s, uint64_t k0, uint64_t k1, int out128) noexcept nogil
    void embcache_sip_update(embcache_sip_state *s, const void *data, size_t n) noexcept nogil
    void embcache_sip_update_u64(embcache_sip_state *s, uint64_t x) noexcept nogil
    void embcache_sip_final(embcache_sip_state *s, uint64_t out[2]) noexcept nogil


cdef extern from "_kernels.h":
    int embcache_f32_all_finite(const float *p, size_t n) noexcept nogil
    int embcache_f64_all_storable(const double *p, size_t n) noexcept nogil
    void embcache_f64_to_f32(float *dst, const double *src, size_t n) noexcept nogil

cdef extern from "_lock.h":
    ctypedef struct embcache_lock:
        pass
    void embcache_lock_acquire(embcache_lock *l) noexcept
    void embcache_lock_release(embcache_lock *l) noexcept

cdef extern from "_slab.h":
    void *embcache_slab_reserve(size_t nbytes) nogil
    void embcache_slab_release(void *p, size_t nbytes) nogil


cdef struct Fingerprint:
    uint64_t lo
    uint64_t hi


cdef struct Entry:
    # 48 bytes. A free slot keeps only recency_next, as the free-slot chain.
    uint64_t fp_lo
    uint64_t fp_hi
    double expires_at           # clock seconds; +inf when the cache has no TTL
    slot_t recency_prev         # towards the most recently used entry
    slot_t recency_next         # towards the least recently used entry
    slot_t expiry_prev          # towards the oldest write
    slot_t expiry_next          # towards the newest write
    int32_t slab                # which slab (dimension) holds the vector
    row_t row                   # the row in that slab


cdef struct Bucket:
    # One cell of the open-addressing index. `tag` is the low 32 bits of the
    # fingerprint: its low bits give the home cell, so probing and deletion
    # never read the entry table to place a cell.
    uint32_t tag
    slot_t slot                 # NO_SLOT marks an empty cell


cdef struct Slab:
    dim_t dim                   # floats per row
    float32_t *rows             # capacity * dim floats, contiguous, reserved whole (_slab.h)
    row_t capacity              # rows this dimension may ever need (budget and max_entries)
    row_t high_water            # rows [0, high_water) have been handed out since the last clear
    row_t peak                  # the highest high_water before a clear (those pages stay mapped)
    row_t free_head             # freed rows, chained through their first 4 bytes
    row_t used                  # rows holding a live vector


cdef struct Source:
    # A vector to store, described in place: a strided run of float32 or float64.
    const char *data
    Py_ssize_t n                # elements
    Py_ssize_t stride           # bytes between elements
    bint is_f64                 # float64 source, else float32


@cython.final
cdef class CacheKey:
    cdef readonly str content_hash
    cdef readonly str model_version
    cdef readonly object chunk_id
    cdef Fingerprint fingerprint

# Byte offset of CacheKey.fingerprint inside the object, so C loops over a
# sequence of keys can read fingerprints without touching reference counts.
cdef Py_ssize_t FINGERPRINT_OFFSET

cdef inline const Fingerprint *_key_fingerprint(PyObject *key) noexcept nogil:
    return <const Fingerprint *>(<char *>key + FINGERPRINT_OFFSET)


@cython.final
cdef class SyncEmbeddingCache:
    cdef embcache_lock lock         # see _lock.h; taken and dropped with the GIL held

    # limits
    cdef slot_t max_entries
    cdef Py_ssize_t budget_bytes
    cdef double ttl                 # seconds; <= 0 means entries never expire
    cdef dim_t fixed_dim            # 0 when any dimension is accepted
    cdef object clock               # None: the C monotonic clock
    cdef object _flights            # single-flight registry for get_or_compute (embcache._flight)
    cdef bint c_clock               # clock is None
    cdef double last_now            # latest user-clock reading used (user clocks only)
    cdef object max_memory_mb_arg   # as given, reported back by get_cache_info
    cdef object ttl_arg

    # entry table and its free-slot chain
    cdef Entry *entries
    cdef slot_t entry_capacity
    cdef slot_t entry_limit         # entry_capacity never grows past this
    cdef slot_t free_slot
    cdef slot_t size

    # open-addressing index (power-of-two cells, linear probing, backward-shift deletion)
    cdef Bucket *buckets
    cdef size_t bucket_mask

    # slabs, one per distinct dimension
    cdef Slab *slabs
    cdef int32_t n_slabs
    cdef int32_t slab_capacity
    cdef int32_t last_slab          # the slab the last put used

    # intrusive lists: recency (head = most recent) and expiry (head = oldest write)
    cdef slot_t recency_head
    cdef slot_t recency_tail
    cdef slot_t expiry_head
    cdef slot_t expiry_tail

    # accounting and stats
    cdef Py_ssize_t used_bytes
    cdef unsigned long long hits
    cdef unsigned long long misses
    cdef unsigned long long evictions
    cdef unsigned long long expirations
    cdef unsigned long long puts
    cdef unsigned long long overwrites
    cdef unsigned long long removals

    # growth: only until the bounds are reached, never in the steady state
    cdef int _add_slab(self, dim_t dim) except -1
    cdef int _grow_entries(self, slot_t capacity) except -1
    cdef int _resize_index(self, size_t cells) except -1
    cdef int _reserve(self, Py_ssize_t count) except -1

    # index
    cdef size_t _find_cell(self, const Fingerprint *fp) noexcept nogil
    cdef slot_t _find(self, const Fingerprint *fp) noexcept nogil
    cdef void _index_delete(self, size_t hole) noexcept nogil

    # intrusive lists
    cdef void _recency_unlink(self, slot_t s) noexcept nogil
    cdef void _recency_push_head(self, slot_t s) noexcept nogil
    cdef void _expiry_unlink(self, slot_t s) noexcept nogil
    cdef void _expiry_push_tail(self, slot_t s) noexcept nogil

    # entries and the eviction policy
    cdef bint _expired(self, slot_t s, double now) noexcept nogil
    cdef float32_t *_row_ptr(self, slot_t s) noexcept nogil
    cdef void _discard(self, slot_t s) noexcept nogil
    cdef slot_t _victim(self, double now) noexcept nogil
    cdef void _make_room(self, Py_ssize_t need, double now) noexcept nogil
    cdef void _purge_expired(self, double now) noexcept nogil
    cdef int32_t _slab_for(self, dim_t dim) noexcept nogil
    cdef double _now_locked(self, double given) noexcept nogil
    cdef double _now_unlocked(self) except? -1.0
    cdef int32_t _prepare_put(self, dim_t dim, Py_ssize_t count) except -2
    cdef void _store(self, const Fingerprint *fp, const Source *src, int32_t slab_index,
                     double now) noexcept nogil
    cdef void _store_rows(self, PyObject **keys, const Source *first, Py_ssize_t n,
                          Py_ssize_t row_stride, int32_t slab_index, double now) noexcept nogil
    cdef dim_t _batch_dim(self, PyObject **keys, Py_ssize_t n, double now,
                          dim_t *dims, int *n_dims) noexcept nogil
    cdef void _copy_out_rows(self, PyObject **keys, Py_ssize_t n, float32_t *matrix, dim_t dim,
                             cnp.npy_bool *found, double now) noexcept nogil
    cdef _check_locked(self)
