# Declarations of the core: its C types, the Table struct and the classes' fields.
# Behaviour lives in _core.pyx and the files it includes (the map is at its top);
# the typed public surface in _core.pyi.

cimport cython
cimport numpy as cnp
from cpython.object cimport PyObject
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int32_t, uint32_t, uint64_t

# --- central typedefs -------------------------------------------------------
ctypedef float float32_t
ctypedef int32_t slot_t        # an entry's place in the entry table
ctypedef int32_t row_t         # a row of a slab
ctypedef Py_ssize_t dim_t      # floats per vector

cdef extern from "core/keyhash.h":
    uint64_t embcache_key_hash(uint64_t k0, uint64_t k1, const uint64_t *digest) noexcept nogil

cdef extern from "core/snapshot/blake2b.h":
    ctypedef struct embcache_blake2b_state:
        pass
    int embcache_blake2b_init(embcache_blake2b_state *s, size_t outlen, const void *key,
                              size_t keylen) noexcept nogil
    void embcache_blake2b_update(embcache_blake2b_state *s, const void *data, size_t n) noexcept nogil
    void embcache_blake2b_update_u64le(embcache_blake2b_state *s, uint64_t x) noexcept nogil
    void embcache_blake2b_final(embcache_blake2b_state *s, void *out) noexcept nogil

cdef extern from "core/kernels.h":
    int embcache_f32_all_finite(const float *p, size_t n) noexcept nogil
    int embcache_f64_all_storable(const double *p, size_t n) noexcept nogil
    void embcache_f64_to_f32(float *dst, const double *src, size_t n) noexcept nogil

cdef extern from "core/snapshot/checksum.h":
    ctypedef struct embcache_mix_state:
        pass
    void embcache_mix_init(embcache_mix_state *s, uint64_t seed) noexcept nogil
    void embcache_mix_update(embcache_mix_state *s, const void *data, size_t n) noexcept nogil
    uint64_t embcache_mix_final(const embcache_mix_state *s) noexcept nogil
    uint64_t embcache_mix64(const void *data, size_t n, uint64_t seed) noexcept nogil

cdef extern from "core/snapshot/reader.h":
    ctypedef struct embcache_reader:
        pass
    int EMBCACHE_READER_SHORT
    int embcache_reader_start(embcache_reader *r, int fd, uint64_t offset, uint64_t nbytes,
                              size_t chunk, char *buf0, char *buf1, int f32) noexcept nogil
    char *embcache_reader_next(embcache_reader *r, ptrdiff_t *len, int *finite) noexcept nogil
    void embcache_reader_release(embcache_reader *r) noexcept nogil
    void embcache_reader_stop(embcache_reader *r) noexcept nogil

cdef extern from "core/snapshot/writer.h":
    ctypedef struct embcache_writer:
        pass
    int embcache_writer_start(embcache_writer *w, int fd, char *buf0, char *buf1) noexcept nogil
    char *embcache_writer_buffer(embcache_writer *w) noexcept nogil
    int embcache_writer_submit(embcache_writer *w, size_t len) noexcept nogil
    int embcache_writer_finish(embcache_writer *w) noexcept nogil
    void embcache_writer_stop(embcache_writer *w) noexcept nogil

cdef extern from "core/lock.h":
    ctypedef struct embcache_lock:
        pass
    void embcache_lock_acquire(embcache_lock *l) noexcept
    void embcache_lock_release(embcache_lock *l) noexcept
    void embcache_lock_reset(embcache_lock *l) noexcept

cdef extern from "core/slab.h":
    void *embcache_slab_reserve(size_t nbytes, int huge) noexcept nogil
    void embcache_slab_release(void *p, size_t nbytes) noexcept nogil
    void embcache_slab_trim(void *p, size_t reserved, size_t keep, size_t written) noexcept nogil
    size_t embcache_slab_resident(const void *p, size_t written, size_t reserved) noexcept nogil
    void embcache_slab_advise(void *p, size_t reserved, size_t start, size_t stop, int huge) noexcept nogil
    size_t EMBCACHE_HUGE_PAGE
    void embcache_prefetch(const void *p, size_t n) noexcept nogil

cdef extern from "core/table_mem.h":
    void *embcache_table_alloc(size_t nbytes, size_t align) noexcept nogil
    void embcache_table_free(void *p, size_t nbytes) noexcept nogil
    void *embcache_table_resize(void *p, size_t old, size_t nbytes, size_t align) noexcept nogil
    size_t embcache_table_footprint(size_t nbytes) noexcept nogil
    size_t EMBCACHE_OWN_MAP_BYTES


# --- keys -------------------------------------------------------------------

cdef struct KeyId:
    # What the table knows of a key. `digest` is BLAKE2b-256 of the key's
    # canonical encoding (stable everywhere); `hash` is the digest mixed
    # with the secret per-process key (core/keyhash.h; index position and tag).
    uint64_t hash
    uint64_t digest[4]


@cython.final
cdef class CacheKey:
    cdef readonly str content_hash
    cdef readonly str model_version
    cdef readonly object chunk_id
    cdef KeyId ident

# Byte offset of CacheKey.ident inside the object, so C loops over a tuple of
# keys read identities without touching reference counts.
cdef Py_ssize_t KEY_IDENT_OFFSET

cdef inline const KeyId *key_ident(PyObject *key) noexcept nogil:
    return <const KeyId *>(<char *>key + KEY_IDENT_OFFSET)


# --- vectors ----------------------------------------------------------------

cdef struct Source:
    # Values to store, described in place: a strided run of float32 or float64.
    const char *data
    Py_ssize_t n                # elements
    Py_ssize_t stride           # bytes between elements
    bint is_f64                 # float64 source, else float32
    bint encoded                # a row already in the table's storage (a snapshot load):
                                #   copied as is; n, stride and is_f64 unused


# The core's intake (core/intake.pxi), shared with embcache.shared so a vector is
# read and judged with the same rules and messages wherever it is stored.
cdef cnp.ndarray read_real(object data, int ndim, str what, str shape_hint)
cdef int check_rows(const Source *first, Py_ssize_t row_stride, Py_ssize_t start,
                    Py_ssize_t stop, str what, int storage) except -1


# --- the table --------------------------------------------------------------

cdef struct Entry:
    # 64 bytes: one cache line (the entry table is 64-byte aligned). A free
    # slot keeps only recency_next, as the free-slot chain.
    uint64_t digest[4]
    double expires_at           # clock seconds; +inf when the cache has no TTL
    slot_t recency_prev         # policy links; for LRU towards the most recent
    slot_t recency_next         # ... and towards the least recent
    slot_t expiry_prev          # towards the oldest write
    slot_t expiry_next          # towards the newest write
    int32_t slab                # which slab (dimension) holds the vector
    row_t row                   # its row in that slab


cdef struct Cell:
    # One cell of the open-addressing index. `tag` is the low 32 bits of the
    # key's hash: its low bits give the home cell, so probing and deletion
    # never read the entry table to place a cell.
    uint32_t tag
    slot_t slot                 # NO_SLOT marks an empty cell


cdef struct Slab:
    # Rows are dense: [0, used) hold live vectors, but for at most one hole. A
    # row is the vector encoded in the table's storage (its row bytes: dim
    # float32, dim float16 / bfloat16, or a float32 scale and dim int8;
    # core/convert.h) followed by its owner's slot (a freed row is refilled by
    # the slab's last row, which needs to know whose it is; not aligned when the
    # row bytes are not a multiple of 4, so read and written through memcpy).
    dim_t dim                   # floats per vector
    size_t stride               # bytes per row: embcache_row_bytes(storage, dim) + sizeof(slot_t)
    char *rows                  # capacity rows, reserved whole (core/slab.h)
    row_t capacity              # rows this dimension may ever need (budget and max_entries)
    row_t used                  # rows [0, used) are live, but for `hole`
    row_t hole                  # NO_ROW, or the one free row below used - 1
    row_t written               # rows [0, written) may be resident (used <= written)


cdef struct Stats:
    unsigned long long hits
    unsigned long long misses
    unsigned long long evictions
    unsigned long long expirations
    unsigned long long puts
    unsigned long long overwrites
    unsigned long long removals


cdef struct Table:
    # limits
    slot_t max_entries
    Py_ssize_t memory_budget_bytes
    double ttl_seconds          # <= 0: entries never expire
    dim_t dim                   # the fixed dimension; 0 when any is accepted
    bint user_clock             # times come from a Python clock, read before locking
    double last_now             # latest user-clock reading used
    int policy                  # POLICY_LRU or POLICY_TINYLFU (see core/policy.pxi)
    int storage                 # EMBCACHE_STORE_*: how rows hold vectors (core/convert.h)
    float32_t *scratch          # a compact storage's float32 row for encoding converted
    size_t scratch_floats       #   (float64, strided) input: as long as any slab's dim
                                #   (add_slab); SIZE_MAX under float32, which needs none

    # entry table and its free-slot chain
    Entry *entries
    slot_t entry_capacity
    slot_t entry_limit          # entry_capacity never grows past this
    slot_t free_slot_head
    slot_t size
    slot_t resize_above         # reserve_slots resizes past this: entry_capacity, or -1 once
                                #   removals leave fewer entries than shrink_mark
    slot_t shrink_mark          # 0, or three quarters of a table that may shrink

    # open-addressing index: power-of-two cells, linear probing, backward-shift deletion
    Cell *cells
    size_t cell_mask

    # slabs, one per distinct dimension
    Slab *slabs
    int32_t n_slabs
    int32_t slab_capacity
    int32_t last_slab           # the slab the last put used
    int32_t huge_slab           # dim=None: the one slab whose new chunks may be huge pages, or -1
    int32_t *dim_cells          # dim -> slab: open addressing, 2 * slab_capacity cells, -1 empty

    # intrusive lists: recency (head = most recent) and expiry (head = oldest write)
    slot_t recency_head
    slot_t recency_tail
    slot_t expiry_head
    slot_t expiry_tail

    Py_ssize_t used_bytes       # policy_fixed_bytes + sum over live entries of entry_bytes(dim)
                                #   + policy_entry_bytes
    Stats stats

    # the policy's own state (core/policy.pxi); all zero / NO_SLOT under POLICY_LRU
    Py_ssize_t policy_entry_bytes   # accounted per live entry beyond ENTRY_OVERHEAD
    Py_ssize_t policy_fixed_bytes   # accounted once (the frequency sketch)
    uint32_t *policy_slots      # per entry slot: key bits << 2 | segment (W-TinyLFU)
    slot_t policy_slot_capacity
    slot_t segment_head[3]      # WINDOW, PROBATION, PROTECTED: most recent first
    slot_t segment_tail[3]
    slot_t segment_size[3]
    slot_t policy_capacity      # entries the segment shares are measured against
    slot_t window_max           # the window's share (moves by hill climbing)
    slot_t protected_max        # the protected segment's share of the main region
    uint64_t *sketch            # count-min sketch: 16 four-bit counters per word
    size_t sketch_words         # a power of two, >= 8 (one 64-byte block)
    unsigned long long sketch_added   # increments since the last halving
    unsigned long long sketch_period  # halve every this many increments
    unsigned long long climb_hits     # accesses of the current hill-climbing sample
    unsigned long long climb_misses
    double climb_previous_rate  # hit rate of the previous sample
    double climb_step           # entries the window moves by next (signed)
    unsigned long long admission_rejections


# --- the classes ----------------------------------------------------------------

@cython.final
cdef class SyncEmbeddingCache:
    cdef embcache_lock lock         # see core/lock.h; taken and dropped with the GIL held
    cdef Table table
    cdef object clock               # None: the C monotonic clock
    cdef object max_memory_mb_arg   # the limits as given, reported back as given
    cdef object ttl_seconds_arg
    cdef object _flights            # the single-flight registry, made on first use (flights)
    cdef dim_t last_dim             # the dim last stored or found: a batch lookup's guess (0: none)
    cdef dim_t max_fit_dim          # the largest dim one entry of fits the budget (check_dim)
    cdef object __weakref__         # the fork hooks find live caches through a WeakSet
    cdef readonly str name          # a label for monitoring (embcache.core.names)

    cdef double now_unlocked(self) except? -1.0
    cdef double now_locked(self, double given) noexcept nogil
    cdef int check_dim(self, dim_t dim, str what) except -1


@cython.final
cdef class PutBatch:
    cdef readonly SyncEmbeddingCache cache
    cdef readonly tuple keys
    cdef readonly Py_ssize_t n
    cdef readonly dim_t dim
    cdef readonly Py_ssize_t taken
    cdef readonly str what
    cdef object source              # the caller's data, read as a real 2-D array
    cdef object private             # (n, dim) float32 C-contiguous, owned by the batch

    @staticmethod
    cdef PutBatch create(SyncEmbeddingCache cache, object keys, object matrix, str what,
                         object dim)


@cython.final
cdef class GetBatch:
    cdef readonly SyncEmbeddingCache cache
    cdef readonly tuple keys
    cdef readonly Py_ssize_t n
    cdef readonly dim_t dim
    cdef readonly object matrix
    cdef readonly object found
    cdef Py_ssize_t done            # keys [0, done) have been read

    @staticmethod
    cdef GetBatch create(SyncEmbeddingCache cache, object keys, object out)


# --- snapshots (the format: core/snapshot/format.pxi; embcache.shared shares it) --

cdef enum:
    SNAP_HEADER_BYTES = 160         # versions 2 and 3
    SNAP_HEADER_SUMMED = 152        # the header checksum covers bytes [0, 152)
    SNAP_TRAILER_BYTES = 16         # file id, checksum: the end of the entries and groups
    SNAP_SEED_HEADER = 1
    SNAP_SEED_GROUPS = 2
    SNAP_SEED_ENTRIES = 3
    SNAP_SEED_BLOCK = 256           # + the group's index


cdef struct SnapRecord:
    # one entry on disk, 48 bytes
    uint64_t digest[4]
    double expires          # wall-clock seconds since the epoch; +inf: never
    uint32_t group
    uint32_t flags          # 0


cdef struct SnapGroup:
    # one dimension on disk, 32 bytes
    uint64_t dim
    uint64_t count
    uint64_t checksum       # of the group's block of vectors
    uint64_t reserved       # 0


cdef struct SnapLayout:
    # what a load learns from a snapshot's header and groups section, all checked
    uint32_t version
    uint64_t header_bytes   # where the vector blocks start
    uint64_t trailer_bytes  # of the entries and groups sections
    bint bound              # version >= 2: the file id and the chained checksums
    int storage             # the rows' storage (EMBCACHE_STORE_*)
    uint64_t n_entries
    uint32_t n_groups
    uint64_t fixed_dim      # 0: any
    uint64_t max_entries
    double max_memory_mb
    double ttl_seconds      # 0: none
    double saved_at         # wall clock
    uint64_t entries_offset
    uint64_t groups_offset
    uint64_t blocks_bytes
    uint64_t file_id
    uint64_t entries_sum    # the entries section's checksum the header records


cdef inline uint64_t section_seed(uint64_t file_id, uint64_t seed) noexcept nogil:
    """A section's checksum seed: its own seed mixed with the file id (0 in
    version 1, where the seeds are the sections' own)."""
    return file_id ^ seed


cdef inline uint64_t section_checksum(const unsigned char *p, size_t n, uint64_t file_id,
                                      uint64_t seed, bint with_id) noexcept nogil:
    """The checksum of a small section's records (`n` bytes at `p`) and, in
    version 2 (`with_id`), of the file id that follows them."""
    cdef embcache_mix_state mix
    embcache_mix_init(&mix, section_seed(file_id, seed))
    embcache_mix_update(&mix, p, n)
    if with_id:
        embcache_mix_update(&mix, &file_id, 8)
    return embcache_mix_final(&mix)


# core/snapshot/load.pxi: a snapshot's header, groups and entries read and checked
# (SnapshotError naming `source` for a malformed file)
cdef bytes snapshot_meta(object source, int fd, uint64_t size, SnapLayout *L)
cdef int snapshot_entries(object source, int fd, const SnapLayout *L, const SnapGroup *groups,
                          SnapRecord *recs, uint64_t *counts) except -1
