# The batch protocol: checked batches that callers above the core (the asyncio
# facade, single flight, CachedEmbedder) take, store and read in slices.
#
# Owns: PutBatch and GetBatch. Each is bound to the cache that made it (it can
# only ever be stored into or read from that cache), and a PutBatch is bound to
# its contents: take() copies the values it checks into a private float32
# matrix, and store() stores from that copy, so a caller's buffer changing
# between the two (another coroutine writing a NaN, say) changes nothing.


cdef inline Py_ssize_t stop_or_end(object stop, Py_ssize_t n) except -2:
    if stop is None:
        return n
    return as_count(stop, "stop", 0, n)


cdef void copy_rows_in(float32_t *dst, const Source *first, Py_ssize_t row_stride,
                       Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """Rows [start, stop) of a checked matrix into rows [start, stop) of `dst`."""
    cdef Source row = first[0]
    cdef Py_ssize_t i
    for i in range(start, stop):
        row.data = first.data + i * row_stride
        copy_in(dst + <size_t>i * <size_t>first.n, &row)


DEF ROUND_TRIP_STACK_BYTES = 8192    # an encoded row this long or shorter needs no malloc


cdef int round_trip_rows(int storage, float32_t *rows, dim_t dim, Py_ssize_t start,
                         Py_ssize_t stop) noexcept nogil:
    """Rows [start, stop) of a (n, dim) float32 matrix replaced by what a row of
    `storage` decodes them to (encoded, then decoded): the values the cache will
    hold. -1 when the scratch row cannot be had (nothing changed)."""
    cdef unsigned char stack[ROUND_TRIP_STACK_BYTES]
    cdef size_t nbytes = embcache_row_bytes(storage, <size_t>dim)
    cdef unsigned char *encoded = stack
    cdef Py_ssize_t i
    cdef float32_t *row
    if nbytes > ROUND_TRIP_STACK_BYTES:
        encoded = <unsigned char *>malloc(nbytes)
        if encoded == NULL:
            return -1
    for i in range(start, stop):
        row = rows + <size_t>i * <size_t>dim
        embcache_encode_row(storage, row, <size_t>dim, encoded)
        embcache_decode_row(storage, encoded, <size_t>dim, row)
    if encoded != stack:
        free(encoded)
    return 0


@cython.final
cdef class PutBatch:
    """Rows to store under keys, checked by SyncEmbeddingCache.put_batch.

    ``take(start, stop)`` checks rows [start, stop) into the batch's private
    copy (in order, continuing from ``taken``); ``store(start, stop)`` stores
    taken rows into the batch's cache, as put_many would. ``rows`` is the
    private (n, dim) float32 copy, read-only (rows [0, taken) are valid): the
    values the cache will hold, so for a compact storage what its rows decode
    to (what a later get returns), not the values given.
    """

    def __init__(self):
        raise TypeError("PutBatch objects are made by SyncEmbeddingCache.put_batch")

    @staticmethod
    cdef PutBatch create(SyncEmbeddingCache cache, object keys, object matrix, str what,
                         object dim):
        cdef PutBatch b = PutBatch.__new__(PutBatch)
        cdef Source first
        cdef Py_ssize_t row_stride
        b.cache = cache
        b.what = what
        b.keys = as_key_tuple(keys, "put_batch")
        b.n = len(b.keys)
        b.source = read_matrix(matrix, b.n, what, &first, &row_stride)
        b.dim = first.n if b.n else 0
        if b.n:
            cache.check_dim(b.dim, what)
            if dim is not None and b.dim != as_count(dim, "dim", 1, 2 ** 40):
                raise DimensionMismatchError(f"{what} has dim {b.dim}, but this batch needs dim {dim}")
        b.private = np.empty((b.n, b.dim), dtype=np.float32)
        return b

    @property
    def rows(self):
        """The private (n, dim) float32 copy of the taken rows, read-only."""
        cdef cnp.ndarray view = <cnp.ndarray>self.private.view()
        # the flag cleared in C: ``view.flags.writeable = False`` costs ~0.4 us,
        # most of a one-row miss's bookkeeping beyond the store itself
        cnp.PyArray_CLEARFLAGS(view, cnp.NPY_ARRAY_WRITEABLE)
        return view

    def take(self, start=0, stop=None):
        """Check rows [start, stop) of the caller's matrix (stop: the end) and copy
        them into the private rows (as the cache's storage will hold them). Slices must follow each other from row 0.
        InvalidVectorError names the row and element of a NaN, an infinity or a
        value beyond float32 or the cache's storage; the batch then keeps only
        the rows taken before."""
        cdef Py_ssize_t start_ = as_count(start, "start", 0, self.n)
        cdef Py_ssize_t stop_ = stop_or_end(stop, self.n)
        if start_ != self.taken or stop_ < start_:
            raise ArgumentValueError(
                f"rows [{start_}, {stop_}) do not continue the taken rows [0, {self.taken})")
        cdef cnp.ndarray source = <cnp.ndarray>self.source
        cdef Source first
        describe(source, 1, &first)
        cdef Py_ssize_t row_stride = cnp.PyArray_STRIDE(source, 0)
        check_rows(&first, row_stride, start_, stop_, self.what, self.cache.table.storage)
        cdef float32_t *dst = <float32_t *>cnp.PyArray_DATA(<cnp.ndarray>self.private)
        cdef int storage = self.cache.table.storage
        cdef int failed = 0
        if <size_t>(stop_ - start_) * <size_t>self.dim * 4 >= GIL_FREE_COPY_BYTES:
            with nogil:
                copy_rows_in(dst, &first, row_stride, start_, stop_)
                if storage != EMBCACHE_STORE_F32:
                    failed = round_trip_rows(storage, dst, self.dim, start_, stop_)
        else:
            copy_rows_in(dst, &first, row_stride, start_, stop_)
            if storage != EMBCACHE_STORE_F32:
                failed = round_trip_rows(storage, dst, self.dim, start_, stop_)
        if failed:
            raise MemoryError(f"could not allocate a row of dim {self.dim} to encode")
        self.taken = stop_

    def store(self, start=0, stop=None):
        """Store taken rows [start, stop) (stop: the end) into the batch's cache,
        row i under keys[i], as put_many would. Only MemoryError can stop it."""
        cdef Py_ssize_t start_ = as_count(start, "start", 0, self.n)
        cdef Py_ssize_t stop_ = stop_or_end(stop, self.n)
        if not start_ <= stop_ <= self.taken:
            raise ArgumentValueError(
                f"rows [{start_}, {stop_}) are not among the taken rows [0, {self.taken})")
        cdef Source first
        describe(<cnp.ndarray>self.private, 1, &first)
        store_matrix(self.cache, self.keys, start_, stop_, &first,
                     cnp.PyArray_STRIDE(<cnp.ndarray>self.private, 0))

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"PutBatch(n={self.n}, dim={self.dim}, taken={self.taken}, what={self.what!r})"


@cython.final
cdef class GetBatch:
    """Keys to look up, checked by SyncEmbeddingCache.get_batch, with the
    (n, dim) ``matrix`` and (n,) ``found`` their rows go to.

    ``read(start, stop)`` looks keys [start, stop) up (in order, continuing from
    the last read): hits are copied and made most recent, misses zero-filled.
    A key whose entry has changed to another dimension since get_batch reads as
    a miss, so reading never raises for anything the cache holds.
    """

    def __init__(self):
        raise TypeError("GetBatch objects are made by SyncEmbeddingCache.get_batch")

    @staticmethod
    cdef GetBatch create(SyncEmbeddingCache cache, object keys, object out):
        cdef GetBatch b = GetBatch.__new__(GetBatch)
        b.cache = cache
        b.keys = as_key_tuple(keys, "get_batch")
        b.n = len(b.keys)
        b.dim = check_out(cache, out, b.n) if out is not None else -1
        b.dim = decide_dim(cache, b.keys, b.dim)
        b.matrix = out if out is not None else np.empty((b.n, b.dim), dtype=np.float32)
        b.found = np.zeros(b.n, dtype=np.bool_)
        return b

    def read(self, start=0, stop=None):
        """Look up keys [start, stop) (stop: the end) into their rows."""
        cdef Py_ssize_t start_ = as_count(start, "start", 0, self.n)
        cdef Py_ssize_t stop_ = stop_or_end(stop, self.n)
        if start_ != self.done or stop_ < start_:
            raise ArgumentValueError(
                f"keys [{start_}, {stop_}) do not continue the keys read [0, {self.done})")
        read_rows(self.cache, self.keys, start_, stop_, self.matrix, self.found)
        self.done = stop_

    @property
    def read_count(self):
        """Keys looked up so far."""
        return self.done

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"GetBatch(n={self.n}, dim={self.dim}, read={self.done})"
