# A batch lookup in one lock, for a cache without a fixed dimension.
#
# Owns: reading a batch whose dimension was guessed (the one last stored or
# found: SyncEmbeddingCache.last_dim), checking the guess and copying the rows
# under the same lock; the caller falls back to deciding the dimension first
# (decide_dim, then read_rows: core/batch_steps.pxi) when the guess is wrong.


cdef int read_guessed(SyncEmbeddingCache cache, tuple keys, cnp.ndarray matrix,
                      cnp.ndarray found) except -1:
    """A whole lookup of `keys` under one lock, for a cache without a fixed
    dim, when their live entries have the dimension `matrix` was made for
    (the one last stored or found: one model's rows, the usual case) or
    none is live: the dimension check and the copy then share the lock.
    1: done, rows in `matrix`; 2: done, nothing live (the answer has no
    columns); 0: another dimension, or several, nothing read or counted (the
    caller decides the dimension and reads, or raises, as without a guess)."""
    cdef dim_t named[NAMED_DIMS]
    cdef int n_dims = 0
    cdef int outcome = 0
    cdef dim_t live
    cdef dim_t dim = cnp.PyArray_DIM(matrix, 1)
    cdef Py_ssize_t n = len(keys)
    cdef PyObject **items = PySequence_Fast_ITEMS(keys)
    cdef float32_t *rows = <float32_t *>cnp.PyArray_DATA(matrix)
    cdef cnp.npy_bool *hit = <cnp.npy_bool *>cnp.PyArray_DATA(found)
    cdef double given = cache.now_unlocked()
    cdef double now
    embcache_lock_acquire(&cache.lock)
    now = cache.now_locked(given)
    live = batch_dim(&cache.table, items, n, now, named, &n_dims)
    if n_dims == 0:  # every key a miss: counted, no row copied
        copy_out_rows(&cache.table, items, n, rows, 0, hit, now)
        outcome = 2
    elif n_dims == 1 and live == dim:
        if <size_t>n * <size_t>dim * 4 >= GIL_FREE_COPY_BYTES:
            with nogil:
                copy_out_rows(&cache.table, items, n, rows, dim, hit, now)
        else:
            copy_out_rows(&cache.table, items, n, rows, dim, hit, now)
        outcome = 1
    embcache_lock_release(&cache.lock)
    return outcome
