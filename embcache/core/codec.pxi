# Row codecs for Python: encode_rows / decode_rows / row_bytes over the C kernels
# of core/convert.h (the Redis tier and the tools use these; nothing re-implements
# a codec in Python).
#
# Owns: the names of the storages, checking codec arguments, and the messages of
# values a storage cannot hold. Touches no cache state.
from libc.stddef cimport ptrdiff_t

cdef extern from "core/convert.h":
    int EMBCACHE_STORE_F32, EMBCACHE_STORE_F16, EMBCACHE_STORE_BF16, EMBCACHE_STORE_I8
    size_t embcache_row_bytes(int storage, size_t dim) noexcept nogil
    ptrdiff_t embcache_first_unstorable(int storage, const float *src, size_t dim) noexcept nogil
    void embcache_encode_row(int storage, const float *src, size_t dim, void *dst) noexcept nogil
    void embcache_decode_row(int storage, const void *src, size_t dim, float *dst) noexcept nogil
    int embcache_force_portable_kernels(int on) noexcept nogil
    int embcache_limit_kernels(int cap) noexcept nogil
    int embcache_kernels() noexcept nogil

cdef extern from "core/convert_x86.h":  # included by convert.h; named so a change rebuilds
    pass

# The storages, in their code order (EMBCACHE_STORE_F32 ... EMBCACHE_STORE_I8).
# The codec kernels, in their level order (EMBCACHE_KERNELS_PORTABLE, _AVX2, _AVX512).
cdef tuple CODEC_KERNELS = ("portable", "avx2", "avx512")
cdef tuple CODEC_STORAGES = ("float32", "float16", "bfloat16", "int8")
DEF CODEC_MAX_DIM = 1 << 28     # 1 GiB of float32 per row: far past any embedding


cdef int codec_storage(object storage) except -1:
    """The code (EMBCACHE_STORE_*) of a storage name; ArgumentTypeError for a
    non-str, ArgumentValueError naming the four for another str."""
    if not isinstance(storage, str):
        raise ArgumentTypeError(f"storage must be a str, got {type(storage).__name__}")
    try:
        return CODEC_STORAGES.index(storage)
    except ValueError:
        raise ArgumentValueError(
            "storage must be one of 'float32', 'float16', 'bfloat16', 'int8', "
            f"got {storage!r}") from None


cdef object storage_value_error(str where, double value, int storage):
    """The InvalidVectorError for a value `storage` cannot hold (NaN and infinity
    anywhere; |x| > 65504 for float16; a value that rounds to infinity for
    bfloat16), located by `where` (e.g. "matrix[2, 3]")."""
    if isnan(value) or isinf(value):
        return InvalidVectorError(
            f"{where} is {value}; embeddings must be finite (no NaN or infinity)")
    if storage == EMBCACHE_STORE_F16:
        return InvalidVectorError(
            f"{where} = {value!r} overflows float16 storage (largest finite is 65504)")
    if storage == EMBCACHE_STORE_BF16:
        return InvalidVectorError(
            f"{where} = {value!r} overflows bfloat16 storage (it rounds to infinity; "
            "largest finite is 3.3895314e+38)")
    return InvalidVectorError(
        f"{where} = {value!r} overflows float32 (largest finite is 3.4028235e+38)")


cdef cnp.ndarray codec_matrix(object data, str name, int type_num, str dtype_name):
    """`data` as a C-contiguous, native-order 2-D ndarray of `type_num` with at
    least one column, else the error saying what it must be."""
    if not cnp.PyArray_Check(data):
        raise ArgumentTypeError(
            f"{name} must be a numpy.ndarray of {dtype_name}, got "
            f"{type(data).__module__}.{type(data).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>data
    if cnp.PyArray_TYPE(arr) != type_num or not cnp.PyArray_ISNOTSWAPPED(arr):
        raise ArgumentTypeError(
            f"{name} must be a native-order {dtype_name} array, got dtype {(<object>arr).dtype}")
    if cnp.PyArray_NDIM(arr) != 2:
        raise InvalidVectorError(f"{name} must be 2-D (rows, columns), got shape {(<object>arr).shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr):
        raise ArgumentValueError(
            f"{name} must be C-contiguous and aligned (numpy.ascontiguousarray makes it so)")
    return arr


cdef size_t codec_dim(object dim) except 0:
    return <size_t>as_count(dim, "dim", 1, CODEC_MAX_DIM)


def row_bytes(storage, dim):
    """Bytes one row of `dim` values takes in `storage`: 4 * dim for "float32",
    2 * dim for "float16" and "bfloat16", dim + 4 for "int8" (a float32 scale,
    then one int8 per value). ArgumentTypeError / ArgumentValueError for an
    unknown storage or a dim that is not an int >= 1."""
    cdef int code = codec_storage(storage)
    return embcache_row_bytes(code, codec_dim(dim))


@cython.boundscheck(False)
@cython.wraparound(False)
def encode_rows(matrix, storage):
    """The rows of a float32 (n, dim) `matrix` encoded for `storage`: a new
    C-contiguous uint8 array of shape (n, row_bytes(storage, dim)), row i the
    bytes of matrix[i] (float16 / bfloat16: little-endian, rounded to nearest
    even; int8: the float32 scale absmax / 127 little-endian, then
    round-half-to-even(x / scale) per value; "float32": the values
    little-endian).

    `matrix` must be a native, C-contiguous float32 ndarray with dim >= 1
    (ArgumentTypeError for another type or dtype, InvalidVectorError for
    another number of dimensions or no columns, ArgumentValueError when not
    contiguous). A value the storage cannot hold (NaN, infinity, |x| > 65504
    for float16, a value that rounds to infinity for bfloat16) raises
    InvalidVectorError naming its position and the storage."""
    cdef int code = codec_storage(storage)
    cdef cnp.ndarray src = codec_matrix(matrix, "matrix", cnp.NPY_FLOAT32, "float32")
    cdef Py_ssize_t n = cnp.PyArray_DIM(src, 0)
    cdef Py_ssize_t dim = cnp.PyArray_DIM(src, 1)
    if dim == 0:
        raise InvalidVectorError(
            "matrix rows are empty; an embedding needs at least one value")
    cdef size_t width = embcache_row_bytes(code, <size_t>dim)
    cdef cnp.ndarray out = np.empty((n, <Py_ssize_t>width), dtype=np.uint8)
    cdef const float *rows = <const float *>cnp.PyArray_DATA(src)
    cdef unsigned char *dst = <unsigned char *>cnp.PyArray_DATA(out)
    cdef Py_ssize_t bad_row = -1
    cdef ptrdiff_t bad = -1
    if <size_t>n * <size_t>dim * 4 >= GIL_FREE_COPY_BYTES:
        with nogil:
            bad_row = encode_loop(code, rows, n, <size_t>dim, dst, width, &bad)
    else:
        bad_row = encode_loop(code, rows, n, <size_t>dim, dst, width, &bad)
    if bad_row >= 0:
        raise storage_value_error(f"matrix[{bad_row}, {bad}]",
                                  rows[bad_row * dim + bad], code)
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t encode_loop(int code, const float *rows, Py_ssize_t n, size_t dim,
                            unsigned char *dst, size_t width, ptrdiff_t *bad) noexcept nogil:
    """Encode rows [0, n) until one holds a value the storage cannot: its index
    (its column in *bad), else -1."""
    cdef Py_ssize_t i
    for i in range(n):
        bad[0] = embcache_first_unstorable(code, rows + <size_t>i * dim, dim)
        if bad[0] >= 0:
            return i
        embcache_encode_row(code, rows + <size_t>i * dim, dim, dst + <size_t>i * width)
    return -1


@cython.boundscheck(False)
@cython.wraparound(False)
def decode_rows(encoded, storage, dim, out=None):
    """Rows encoded by encode_rows for `storage` and `dim`, decoded to float32:
    `encoded` is a C-contiguous uint8 (n, row_bytes(storage, dim)) array; the
    result is `out` when given (a writable, C-contiguous float32 (n, dim)
    array), else a new array. Decoding is exact: each stored value becomes the
    float32 it stands for (int8: q * scale, in float32).

    DimensionMismatchError when the row length is not row_bytes(storage, dim)
    or `out` has another shape; InvalidVectorError when a row decodes to a
    value that is not finite (bytes no encoder writes: an int8 scale that is
    negative or not finite, a float16 / bfloat16 infinity or NaN), naming the
    row; `out` may then hold rows decoded before it. Argument errors as
    encode_rows."""
    cdef int code = codec_storage(storage)
    cdef size_t d = codec_dim(dim)
    cdef cnp.ndarray src = codec_matrix(encoded, "encoded", cnp.NPY_UINT8, "uint8")
    cdef Py_ssize_t n = cnp.PyArray_DIM(src, 0)
    cdef size_t width = embcache_row_bytes(code, d)
    if <size_t>cnp.PyArray_DIM(src, 1) != width:
        raise DimensionMismatchError(
            f"encoded rows have {cnp.PyArray_DIM(src, 1)} bytes, but {storage} rows of "
            f"dim {d} have {width}")
    cdef cnp.ndarray dst
    if out is None:
        dst = np.empty((n, <Py_ssize_t>d), dtype=np.float32)
    else:
        dst = codec_matrix(out, "out", cnp.NPY_FLOAT32, "float32")
        if not cnp.PyArray_ISWRITEABLE(dst):
            raise ArgumentValueError("out must be writable")
        if cnp.PyArray_DIM(dst, 0) != n or <size_t>cnp.PyArray_DIM(dst, 1) != d:
            raise DimensionMismatchError(
                f"out has shape {(<object>dst).shape}; decoding needs ({n}, {d})")
    cdef const unsigned char *rows = <const unsigned char *>cnp.PyArray_DATA(src)
    cdef float *values = <float *>cnp.PyArray_DATA(dst)
    cdef Py_ssize_t bad_row
    if <size_t>n * d * 4 >= GIL_FREE_COPY_BYTES:
        with nogil:
            bad_row = decode_loop(code, rows, n, d, width, values)
    else:
        bad_row = decode_loop(code, rows, n, d, width, values)
    if bad_row >= 0:
        raise InvalidVectorError(
            f"encoded[{bad_row}] is not a {storage} row encode_rows writes: it decodes to "
            "values that are not finite")
    return dst


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t decode_loop(int code, const unsigned char *rows, Py_ssize_t n, size_t dim,
                            size_t width, float *values) noexcept nogil:
    """Decode rows [0, n) until one is not a row an encoder writes: its index, else -1."""
    cdef Py_ssize_t i
    for i in range(n):
        if not codec_row_valid(code, rows + <size_t>i * width, dim, values + <size_t>i * dim):
            return i
    return -1


cdef inline bint codec_row_valid(int code, const unsigned char *row, size_t dim,
                                 float *values) noexcept nogil:
    """Decode one row into `values`; whether it is one an encoder writes (an int8
    scale >= 0 and finite; every value finite)."""
    if code == EMBCACHE_STORE_I8 and row[3] & 0x80:  # the scale's sign bit (little-endian)
        return False
    embcache_decode_row(code, row, dim, values)
    return embcache_f32_all_finite(values, dim)


def _force_portable_kernels(on):
    """Tests only: True makes the codecs use their portable C kernels, False the
    fastest the CPU supports (the default); returns the previous setting. The
    results are the same bit for bit either way."""
    return bool(embcache_force_portable_kernels(1 if on else 0))


def _codec_kernels(limit=None):
    """Tests only: the codec kernels in use ("portable", "avx2" or "avx512": the
    best the CPU runs, unless limited). With `limit`, first use no better
    kernels than that one ("avx512" lifts the limit)."""
    if limit is not None:
        if limit not in CODEC_KERNELS:
            raise ArgumentValueError(
                f"limit must be one of 'portable', 'avx2', 'avx512', got {limit!r}")
        return CODEC_KERNELS[embcache_limit_kernels(CODEC_KERNELS.index(limit))]
    return CODEC_KERNELS[embcache_kernels()]
