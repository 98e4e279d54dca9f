# The steps of a batch lookup and a batch store, shared by get_many / put_many
# (core/cache.pxi) and GetBatch / PutBatch (core/batch.pxi).
#
# Owns: checking a get_many `out` buffer, deciding the dimension a batch lookup
# answers in, reading keys' rows into a matrix and storing a matrix's checked
# rows, each under the cache's lock (and without the GIL for long copies).


cdef dim_t check_out(SyncEmbeddingCache cache, object out, Py_ssize_t n) except -1:
    """The columns of a get_many `out` buffer for `n` keys, once it is a writable,
    C-contiguous, native float32 (n, dim) array that fits the cache."""
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
    cdef dim_t out_dim = cnp.PyArray_DIM(arr, 1)
    if cache.table.dim and out_dim != cache.table.dim:
        raise DimensionMismatchError(
            f"out has {out_dim} columns, but this cache stores dim {cache.table.dim}")
    return out_dim


cdef dim_t decide_dim(SyncEmbeddingCache cache, tuple keys, dim_t out_dim) except -1:
    """The dimension a batch lookup of `keys` answers in: `out`'s columns when
    given (out_dim >= 0), else that of the live entries, else the fixed dim
    (0 when nothing fixes it). Changes nothing, counts nothing."""
    cdef dim_t named[NAMED_DIMS]
    cdef int n_dims = 0
    cdef dim_t live
    if cache.table.dim:  # every entry has the fixed dim: no lookup, no lock
        return out_dim if out_dim >= 0 else cache.table.dim
    cdef double given = cache.now_unlocked()
    embcache_lock_acquire(&cache.lock)
    live = batch_dim(&cache.table, PySequence_Fast_ITEMS(keys), len(keys),
                     cache.now_locked(given), named, &n_dims)
    embcache_lock_release(&cache.lock)
    if n_dims > 1:
        raise DimensionMismatchError(
            f"the keys hold entries of {name_dims(named, n_dims)}; "
            "one batch must share one dimension")
    if n_dims == 1:
        cache.last_dim = live
    if out_dim >= 0:
        if n_dims == 1 and live != out_dim:
            raise DimensionMismatchError(
                f"out has {out_dim} columns, but the entries have dim {live}")
        return out_dim
    return live if n_dims == 1 else cache.table.dim


cdef int read_rows(SyncEmbeddingCache cache, tuple keys, Py_ssize_t start, Py_ssize_t stop,
                   cnp.ndarray matrix, cnp.ndarray found) except -1:
    """Look up keys [start, stop) into rows [start, stop) of `matrix` and `found`."""
    cdef dim_t dim = cnp.PyArray_DIM(matrix, 1)
    cdef PyObject **items = PySequence_Fast_ITEMS(keys) + start
    cdef float32_t *rows = <float32_t *>cnp.PyArray_DATA(matrix) + <size_t>start * <size_t>dim
    cdef cnp.npy_bool *hit = <cnp.npy_bool *>cnp.PyArray_DATA(found) + start
    cdef Py_ssize_t count = stop - start
    cdef double given = cache.now_unlocked()
    cdef double now
    embcache_lock_acquire(&cache.lock)
    now = cache.now_locked(given)
    if <size_t>count * <size_t>dim * 4 >= GIL_FREE_COPY_BYTES:
        with nogil:
            copy_out_rows(&cache.table, items, count, rows, dim, hit, now)
    else:
        copy_out_rows(&cache.table, items, count, rows, dim, hit, now)
    embcache_lock_release(&cache.lock)
    return 0


cdef int store_matrix(SyncEmbeddingCache cache, tuple keys, Py_ssize_t start, Py_ssize_t stop,
                      const Source *first, Py_ssize_t row_stride) except -1:
    """Store rows [start, stop) (checked) of a matrix under keys [start, stop)."""
    if start == stop:
        return 0
    cdef Source row0 = first[0]
    row0.data = first.data + start * row_stride
    cdef Py_ssize_t count = stop - start
    cdef PyObject **items = PySequence_Fast_ITEMS(keys) + start
    cdef double given = cache.now_unlocked()
    cdef double now
    cdef int32_t slab_index
    embcache_lock_acquire(&cache.lock)
    now = cache.now_locked(given)
    slab_index = prepare_put(&cache.table, row0.n, count)
    if slab_index >= 0:
        if <size_t>count * <size_t>row0.n * 4 >= GIL_FREE_COPY_BYTES:
            with nogil:
                store_rows(&cache.table, items, &row0, count, row_stride, slab_index, now)
        else:
            store_rows(&cache.table, items, &row0, count, row_stride, slab_index, now)
    embcache_lock_release(&cache.lock)
    if slab_index < 0:
        raise MemoryError(f"could not allocate room for {count} vectors of dim {row0.n}")
    return 0
