# get_many's reading: its `out` checked as SyncEmbeddingCache checks it, and
# the lookup of a batch of keys grouped by stripe (each stripe locked once for
# all of its keys). Included by _segment.pyx at module level; each function
# takes the cache it reads.


cdef int check_out(SharedEmbeddingCache c, object out, Py_ssize_t n) except -1:
    """Check a get_many / get_batch `out` for `n` keys: a numpy.ndarray (not a
    subclass), writable, C-contiguous, native-order float32, of shape (n, dim);
    each defect raises what SyncEmbeddingCache raises for it, with its message
    (ArgumentTypeError, ArgumentValueError for the rows, DimensionMismatchError
    for the columns)."""
    if not cnp.PyArray_CheckExact(out):
        raise ArgumentTypeError(f"out must be a numpy.ndarray (not a subclass), got "
                                f"{type(out).__module__}.{type(out).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>out
    if (cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32 or not cnp.PyArray_ISNOTSWAPPED(arr)
            or cnp.PyArray_NDIM(arr) != 2 or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or not cnp.PyArray_ISWRITEABLE(arr)):
        raise ArgumentTypeError(
            "out must be a writable, C-contiguous, native-order float32 array of shape "
            f"(len(keys), dim); got dtype {out.dtype}, shape {out.shape}, "
            f"C-contiguous {bool(cnp.PyArray_IS_C_CONTIGUOUS(arr))}, "
            f"writable {bool(cnp.PyArray_ISWRITEABLE(arr))}")
    if cnp.PyArray_DIM(arr, 0) != n:
        raise ArgumentValueError(f"out has {cnp.PyArray_DIM(arr, 0)} rows for {n} keys")
    if cnp.PyArray_DIM(arr, 1) != c.seg.L.dim:
        raise DimensionMismatchError(
            f"out has {cnp.PyArray_DIM(arr, 1)} columns, but this cache stores dim {c.seg.L.dim}")
    return 0


DEF SCRATCH_KEYS = 1024   # batches up to this many keys use the cache object's scratch

cdef extern from *:
    """
    static inline int embc_take_flag(int *flag) {
        return __atomic_exchange_n(flag, 1, __ATOMIC_ACQUIRE) == 0;
    }
    static inline void embc_drop_flag(int *flag) { __atomic_store_n(flag, 0, __ATOMIC_RELEASE); }
    """
    bint embc_take_flag(int *flag) noexcept nogil
    void embc_drop_flag(int *flag) noexcept nogil


cdef size_t scratch_bytes(Py_ssize_t keys, uint32_t stripes) noexcept nogil:
    """read_grouped's arrays for `keys` keys: their hashes, their order by
    stripe, and each stripe's start."""
    return <size_t>keys * (sizeof(uint64_t) + sizeof(uint32_t)) + (stripes + 1) * sizeof(uint32_t)


cdef char *take_scratch(SharedEmbeddingCache c, Py_ssize_t n, bint *own) except? NULL:
    """Room for read_grouped's arrays for `n` keys: the cache object's own block
    (made on first use, kept until the object goes) when `n` is at most
    SCRATCH_KEYS and no other thread uses it (`own` set: give it back with
    embc_drop_flag), else a block of its own for the caller to free."""
    cdef uint32_t stripes = c.seg.L.n_stripes
    own[0] = n <= SCRATCH_KEYS and embc_take_flag(&c.scratch_busy)
    if own[0]:
        if c.scratch != NULL and c.scratch_stripes != stripes:  # __init__ ran again
            free(c.scratch)
            c.scratch = NULL
        if c.scratch == NULL:
            c.scratch = <char *>malloc(scratch_bytes(SCRATCH_KEYS, stripes))
            c.scratch_stripes = stripes
        if c.scratch != NULL:
            return c.scratch
        own[0] = 0
        embc_drop_flag(&c.scratch_busy)
    cdef char *block = <char *>malloc(scratch_bytes(n, stripes))
    if block == NULL:
        raise MemoryError()
    return block


cdef int read_grouped(SharedEmbeddingCache c, tuple seq, char *base, char *hit) except -1:
    """Look every key of `seq` up, locking each stripe once for all of its keys
    (a counting sort by stripe), copying hits to their rows of `base`. Every
    key's index cell is prefetched first; a stripe's hits and misses are
    added once for its keys (one write to the stripe's counters per batch).
    Nothing is allocated for a batch of up to SCRATCH_KEYS keys (take_scratch)."""
    cdef Py_ssize_t i, j, k, n = len(seq)
    cdef uint64_t hits
    cdef embc_stripe *st
    cdef uint32_t s, stripes = c.seg.L.n_stripes
    cdef size_t out_bytes = c.seg.L.dim * 4
    cdef double now = c.clock_now()
    cdef const char *row
    cdef PyObject **items = PySequence_Fast_ITEMS(seq)
    cdef bint own
    cdef char *block = take_scratch(c, n, &own)
    cdef Py_ssize_t room = SCRATCH_KEYS if own else n
    cdef uint64_t *hs = <uint64_t *>block
    cdef uint32_t *order = <uint32_t *>(block + <size_t>room * sizeof(uint64_t))
    cdef uint32_t *start = order + room
    memset(start, 0, (stripes + 1) * sizeof(uint32_t))
    try:
        for i in range(n):
            hs[i] = embc_hash(&c.seg, (<CacheKey>items[i]).ident.digest)
            s = embc_stripe_of(&c.seg, hs[i])
            embc_prefetch_cell(&c.seg, s, hs[i])
            start[s + 1] += 1
        for s in range(stripes):
            start[s + 1] += start[s]
        for i in range(n):
            s = embc_stripe_of(&c.seg, hs[i])
            order[start[s]] = <uint32_t>i
            start[s] += 1
        j = 0
        for s in range(stripes):          # start[s] is now the end of stripe s
            if <Py_ssize_t>start[s] == j:
                continue
            c.lock(s)
            hits = 0
            k = j
            while j < <Py_ssize_t>start[s]:
                i = order[j]
                row = embc_lookup(&c.seg, s, hs[i], (<CacheKey>items[i]).ident.digest, now, 2)
                if row != NULL:
                    decode_row(&c.seg.L, <float *>(base + i * out_bytes), row)
                    hit[i] = 1
                    hits += 1
                j += 1
            st = embc_stripe_at(&c.seg, s)
            st.hits += hits
            st.misses += <uint64_t>(j - k) - hits
            embc_unlock(&c.seg, s)
    finally:
        if own:
            embc_drop_flag(&c.scratch_busy)
        else:
            free(block)
    return 0
