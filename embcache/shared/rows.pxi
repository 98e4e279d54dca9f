# Rows in the segment's storage: the storages and their row bytes, reading and
# judging callers' vectors (the core's intake: the same rules and messages as
# SyncEmbeddingCache under the same storage), and encoding / decoding one row
# with core/convert.h's kernels (chosen for the CPU at run time). Included by
# _segment.pyx at module level; no cache state here.

from libc.stddef cimport ptrdiff_t

from embcache._core cimport Source, check_rows, read_real

cdef extern from *:
    """
    #include "core/convert.h"
    /* A storage's row bytes (core/convert.h), 0 for a code that names none (a
       header's storage field is checked with it). */
    static size_t embc_row_bytes_of(int storage, size_t dim) {
        if (storage < EMBCACHE_STORE_F32 || storage > EMBCACHE_STORE_I8) return 0;
        return embcache_row_bytes(storage, dim);
    }
    """
    int EMBCACHE_STORE_F32, EMBCACHE_STORE_I8
    ptrdiff_t embcache_first_unstorable(int storage, const float *src, size_t dim) noexcept nogil
    size_t embc_row_bytes_of(int storage, size_t dim) noexcept nogil
    void embcache_encode_row(int storage, const float *src, size_t dim, void *dst) noexcept nogil
    void embcache_decode_row(int storage, const void *src, size_t dim, float *dst) noexcept nogil

STORAGES = {"float32": 0, "float16": 1, "bfloat16": 2, "int8": 3}
"""The row storages a segment takes, and their codes in the header (core/convert.h's)."""


cdef cnp.ndarray read_rows(object data, int ndim, str what, uint32_t dim, int storage):
    """`data` as a C-contiguous float32 array of `ndim` (1 or 2) dims whose last is
    `dim`, every value one `storage` holds; else the error SyncEmbeddingCache
    raises for it (read and judged by the core's intake). A matrix of no rows is
    returned as it is (its width unchecked: nothing will be stored)."""
    cdef cnp.ndarray arr = read_real(data, ndim, what, "" if ndim == 1 else " (len(keys), dim)")
    cdef Py_ssize_t n = 1 if ndim == 1 else cnp.PyArray_DIM(arr, 0)
    cdef Py_ssize_t width = cnp.PyArray_DIM(arr, ndim - 1)
    if n == 0:
        return np.ascontiguousarray(arr, dtype=np.float32)
    if width == 0:
        raise InvalidVectorError(f"{what} is empty; an embedding needs at least one value"
                                 if ndim == 1 else
                                 f"{what} rows are empty; an embedding needs at least one value")
    if width != dim:
        raise DimensionMismatchError(f"{what} has dim {width}, but this cache stores dim {dim}")
    cdef Source first
    first.data = <const char *>cnp.PyArray_DATA(arr)
    first.n = width
    first.stride = cnp.PyArray_STRIDE(arr, ndim - 1)
    first.is_f64 = cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT64
    first.encoded = False
    check_rows(&first, cnp.PyArray_STRIDE(arr, 0) if ndim == 2 else 0, 0, n, what, storage)
    if cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT32 and cnp.PyArray_IS_C_CONTIGUOUS(arr):
        return arr
    return np.ascontiguousarray(arr, dtype=np.float32)   # values checked: rounding stays finite


cdef bint no_rows(object data):
    """An empty list or tuple, or a 1-D array of no values: a batch of no rows
    whose width cannot be known (put_many of no keys takes it, as the core does)."""
    if isinstance(data, (list, tuple)):
        return len(data) == 0
    return cnp.PyArray_Check(data) and cnp.PyArray_NDIM(<cnp.ndarray>data) == 1 \
        and cnp.PyArray_DIM(<cnp.ndarray>data, 0) == 0


cdef inline void encode_row(const embc_layout *L, char *dst, const float *src) noexcept nogil:
    """Row `src` (dim float32, storable) into `dst` in the segment's storage."""
    if L.storage == EMBCACHE_STORE_F32:
        memcpy(dst, src, L.row_bytes)
    else:
        embcache_encode_row(L.storage, src, L.dim, dst)


cdef inline void decode_row(const embc_layout *L, float *dst, const char *src) noexcept nogil:
    """A stored row's dim float32 values into `dst` (one pass, as cheap as a copy)."""
    if L.storage == EMBCACHE_STORE_F32:
        memcpy(dst, src, L.row_bytes)
    else:
        embcache_decode_row(L.storage, src, L.dim, dst)


cdef int round_trip(const embc_layout *L, float *row) except -1:
    """Row `row` (storable) made what the segment's storage gives back for it
    (encoded, then decoded): what a later get of it returns."""
    if L.storage == EMBCACHE_STORE_F32:
        return 0
    cdef char local[16384]     # a compact row of up to 8,192 values: nothing allocated
    cdef char *scratch = &local[0]
    if L.row_bytes > sizeof(local):
        scratch = <char *>malloc(L.row_bytes)
    if scratch == NULL:
        raise MemoryError()
    embcache_encode_row(L.storage, row, L.dim, scratch)
    embcache_decode_row(L.storage, scratch, L.dim, row)
    if scratch != &local[0]:
        free(scratch)
    return 0
