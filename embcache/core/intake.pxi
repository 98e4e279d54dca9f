# Intake: the one place where callers' vectors, matrices and arguments are read
# and judged.
#
# Owns: converting array-likes to real arrays (once), the rules a storable
# vector obeys and their messages (one per rule, every message starting with
# what the data is: "vector", "matrix", "compute(missing)", ...), copying values into a
# row, and checking constructor-style arguments. Touches no cache state.

# The largest double that rounds to a finite float32 is just below this.
DEF F32_ROUND_LIMIT = 3.4028235677973366e38
DEF F32_MAX = 3.4028234663852886e38

# numpy before 1.24 reads ragged input with a warning (and an object array) where
# later versions raise ValueError: make the old warning an error too.
_RaggedWarning = getattr(np, "exceptions", np).VisibleDeprecationWarning
cdef bint RAGGED_WARNS = tuple(int(p) for p in np.__version__.split(".")[:2]) < (1, 24)


cdef cnp.ndarray as_array(object data):
    if not RAGGED_WARNS:
        return np.asarray(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", _RaggedWarning)
        return np.asarray(data)


cdef cnp.ndarray read_real(object data, int ndim, str what, str shape_hint):
    """`data` as an aligned, native-order float32 or float64 ndarray of `ndim`
    dimensions, converting only when it is not one already (float64 holds every
    other real dtype exactly). VectorTypeError for data that is not real numbers
    (or missing), InvalidVectorError for the wrong number of dimensions."""
    cdef cnp.ndarray arr
    if cnp.PyArray_CheckExact(data):
        arr = <cnp.ndarray>data
    elif cnp.PyArray_Check(data):
        if isinstance(data, (np.matrix, np.ma.MaskedArray)):
            raise VectorTypeError(
                f"{what} must be a {ndim}-D array-like of real numbers, got "
                f"{type(data).__module__}.{type(data).__name__} (pass numpy.asarray(...) of "
                "the values you mean)")
        arr = <cnp.ndarray>data
    elif data is None:
        raise VectorTypeError(f"{what} is missing (got None); it must be a {ndim}-D "
                              "array-like of real numbers")
    elif isinstance(data, (str, bytes, bytearray)):
        raise VectorTypeError(
            f"{what} must be a {ndim}-D array-like of real numbers, got {type(data).__name__}")
    else:
        try:
            arr = as_array(data)
        except MemoryError:
            raise
        except Exception as exc:   # whatever a foreign __array__ raises: our error
            arr = read_foreign(data, ndim, what, exc)
    cdef int type_num = cnp.PyArray_TYPE(arr)
    if not (cnp.PyTypeNum_ISINTEGER(type_num) or cnp.PyTypeNum_ISFLOAT(type_num)):
        arr = read_extension_dtype(arr, type_num, what)
        type_num = cnp.NPY_FLOAT64
    if cnp.PyArray_NDIM(arr) != ndim:
        raise InvalidVectorError(
            f"{what} must be {ndim}-D{shape_hint}, got shape {(<object>arr).shape}")
    if ((type_num != cnp.NPY_FLOAT32 and type_num != cnp.NPY_FLOAT64)
            or not cnp.PyArray_ISALIGNED(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)):
        if type_num == cnp.NPY_LONGDOUBLE:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr.astype(np.float64)   # overflow becomes inf, rejected later
        else:
            arr = arr.astype(np.float64)
    return arr


cdef cnp.ndarray read_extension_dtype(cnp.ndarray arr, int type_num, str what):
    """An array of a dtype that is neither integer nor float to numpy: as float64
    when it is a dtype registered by another package (ml_dtypes' bfloat16 and
    float8 types, say) that numpy casts to float64 without loss; else
    VectorTypeError (bool, complex, strings, objects...)."""
    dtype = (<object>arr).dtype
    if cnp.PyTypeNum_ISUSERDEF(type_num) and np.can_cast(dtype, np.float64, "safe"):
        return arr.astype(np.float64)
    raise VectorTypeError(
        f"{what} must hold real numbers (integer or float dtype), got dtype {dtype}")


cdef str TORCH_HINT = ("; pass a dense CPU tensor of a real dtype, e.g. tensor.detach().cpu().float()"
                       " (a sparse one: .to_dense(); a quantized one: .dequantize())")


cdef cnp.ndarray read_foreign(object data, int ndim, str what, object exc):
    """`data`, which numpy.asarray refused with `exc`, read another way when
    there is one (torch tensors: torch_readable), else the error saying why not:
    InvalidVectorError for a ValueError (ragged rows, say), VectorTypeError for
    anything else (a TypeError, or whatever else the object's __array__ raised)."""
    cdef str hint = ""
    try:
        readable = torch_readable(data)
    except MemoryError:
        raise
    except Exception as again:   # a tensor whose detach() or float() failed
        readable, exc, hint = None, again, TORCH_HINT
    if readable is not None:
        hint = TORCH_HINT
        try:
            return as_array(readable)
        except MemoryError:
            raise
        except Exception as again:
            exc = again
    if isinstance(exc, (ValueError, _RaggedWarning)):
        raise InvalidVectorError(
            f"{what} could not be read as a {ndim}-D array of real numbers: {exc}{hint}"
        ) from None
    raise VectorTypeError(
        f"{what} could not be read as a {ndim}-D array of real numbers "
        f"({type(exc).__name__}: {exc}){hint}") from None


cdef object torch_readable(object data):
    """What numpy can read of a torch tensor it could not (or of lists or tuples
    holding tensors, at any depth); None when `data` is no such thing. A tensor that requires
    grad is read through ``detach()``: a view of the same memory, nothing copied,
    the autograd graph untouched. A tensor of a float dtype numpy has no type
    for (bfloat16, the float8 types) is converted by ``float()`` to float32,
    which holds each of those values exactly; a negated view (its negative bit
    set) is read through ``resolve_neg()``. torch is never imported here: a
    tensor exists only once its caller has imported it."""
    torch = sys.modules.get("torch")
    tensor_type = getattr(torch, "Tensor", None) if torch is not None else None
    if not isinstance(tensor_type, type):
        return None
    if isinstance(data, tensor_type):
        return readable_tensor(torch, data)
    if isinstance(data, (list, tuple)):
        return readable_items(torch, tensor_type, data, 0)
    return None


cdef object readable_items(object torch, object tensor_type, object items, int depth):
    """`items` (a list or tuple) with every tensor in it, at any depth, made
    readable (a new list); None when it holds no tensor. Deeper than numpy reads
    (64 levels), left as is: numpy then refuses it with its own error."""
    if depth >= 64:
        return None
    cdef list out = []
    cdef bint found = False
    for x in items:
        if isinstance(x, tensor_type):
            x = readable_tensor(torch, x)
            found = True
        elif isinstance(x, (list, tuple)):
            inner = readable_items(torch, tensor_type, x, depth + 1)
            if inner is not None:
                x = inner
                found = True
        out.append(x)
    return out if found else None


cdef object readable_tensor(object torch, object tensor):
    tensor = tensor.detach()
    # a lazily negated or conjugated view (torch >= 1.10): numpy cannot read it
    # as is; its values are a (small) copy away. A conjugate is complex, refused
    # for its dtype once read.
    is_neg = getattr(tensor, "is_neg", None)
    if is_neg is not None and is_neg():
        tensor = tensor.resolve_neg()
    is_conj = getattr(tensor, "is_conj", None)
    if is_conj is not None and is_conj():
        tensor = tensor.resolve_conj()
    if tensor.is_floating_point() and tensor.dtype not in (
            torch.float16, torch.float32, torch.float64):
        tensor = tensor.float()
    return tensor


cdef bint is_empty_sequence(object data):
    """An empty list, tuple or 1-D array: no rows, and a width that cannot be known."""
    if isinstance(data, (list, tuple)):
        return len(data) == 0
    return (cnp.PyArray_Check(data) and cnp.PyArray_NDIM(<cnp.ndarray>data) == 1
            and cnp.PyArray_DIM(<cnp.ndarray>data, 0) == 0)


cdef inline void describe(cnp.ndarray arr, int axis, Source *src) noexcept:
    """`src` = the values along `axis` of a read_real result, starting at its data."""
    src.data = <const char *>cnp.PyArray_DATA(arr)
    src.n = cnp.PyArray_DIM(arr, axis)
    src.stride = cnp.PyArray_STRIDE(arr, axis)
    src.is_f64 = cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT64
    src.encoded = False


cdef cnp.ndarray read_vector(object vector, Source *src):
    """A put() vector: 1-D, non-empty, described in `src` (values not yet checked).
    Returns the array that owns the memory: keep it alive while src is used."""
    cdef cnp.ndarray arr = read_real(vector, 1, "vector", "")
    if cnp.PyArray_DIM(arr, 0) == 0:
        raise InvalidVectorError("vector is empty; an embedding needs at least one value")
    describe(arr, 0, src)
    return arr


cdef cnp.ndarray read_matrix(object matrix, Py_ssize_t n_rows, str what, Source *first,
                             Py_ssize_t *row_stride):
    """A batch's (n_rows, dim) matrix, its first row described in `first` and the
    byte step between rows in row_stride (values not yet checked). With no rows,
    an empty list / tuple / 1-D array is accepted too (dim 0)."""
    cdef cnp.ndarray m
    if n_rows == 0 and is_empty_sequence(matrix):
        matrix = np.empty((0, 0), dtype=np.float32)
    if n_rows == 1 and what == "vector":
        # put's one vector (EmbeddingCache.put with a tier takes it through a
        # PutBatch): read and judged as put reads it, then seen as one row
        m = read_real(matrix, 1, what, "")
        if cnp.PyArray_DIM(m, 0) == 0:
            raise InvalidVectorError("vector is empty; an embedding needs at least one value")
        m = (<object>m)[None]  # a view: nothing copied
    else:
        m = read_real(matrix, 2, what, " (len(keys), dim)")
    if cnp.PyArray_DIM(m, 0) != n_rows:
        raise InvalidVectorError(
            f"{what} has {cnp.PyArray_DIM(m, 0)} rows for {n_rows} keys")
    if n_rows and cnp.PyArray_DIM(m, 1) == 0:
        raise InvalidVectorError(f"{what} rows are empty; an embedding needs at least one value")
    describe(m, 1, first)
    row_stride[0] = cnp.PyArray_STRIDE(m, 0)
    return m


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline Py_ssize_t first_unstorable(const Source *src) noexcept nogil:
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
        elif not (fabsf((<const float *>(src.data + i * src.stride))[0]) <= F32_MAX):
            return i
    return -1


DEF CHECK_CHUNK = 256    # float64 or strided values judged for a compact storage this many at a time


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t first_unstorable_in(int storage, const Source *src) noexcept nogil:
    """Index of the first value of `src` that a row of `storage` cannot hold:
    first_unstorable's rule for float32; for a compact storage, NaN, infinity
    or a value beyond float32 or beyond the storage's range once rounded to
    float32 (core/convert.h decides); -1 when all can be stored.
    Values that are not one contiguous float32 run are converted to float32 a
    chunk at a time into a buffer on the stack: nothing is allocated."""
    cdef Py_ssize_t start, m, bad
    cdef ptrdiff_t found
    cdef float32_t chunk[CHECK_CHUNK]
    cdef Source part
    if storage == EMBCACHE_STORE_F32:
        return first_unstorable(src)
    if not src.is_f64 and src.stride == 4:   # NaN and infinity included
        return embcache_first_unstorable(storage, <const float *>src.data, <size_t>src.n)
    part = src[0]
    start = 0
    while start < src.n:
        m = min(<Py_ssize_t>CHECK_CHUNK, src.n - start)
        part.data = src.data + start * src.stride
        part.n = m
        bad = first_unstorable(&part)       # converted only up to a value beyond float32
        part.n = bad if bad >= 0 else m
        copy_in(chunk, &part)
        found = embcache_first_unstorable(storage, chunk, <size_t>part.n)
        if found >= 0:
            return start + found
        if bad >= 0:
            return start + bad
        start += m
    return -1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void copy_in(float32_t *row, const Source *src) noexcept nogil:
    """Row = the values of `src` as float32 (checked storable beforehand)."""
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


cdef object unstorable_error(str where, const Source *src, Py_ssize_t i,
                             int storage=EMBCACHE_STORE_F32):
    """The InvalidVectorError for value i of `src` (found by first_unstorable_in
    for `storage`); `where` locates it, e.g. "vector[3]" or "matrix[2, 3]" (row 2,
    element 3)."""
    cdef double value
    if src.is_f64:
        value = (<const double *>(src.data + i * src.stride))[0]
    else:
        value = (<const float *>(src.data + i * src.stride))[0]
    if isnan(value) or isinf(value):
        return InvalidVectorError(
            f"{where} is {value}; embeddings must be finite (no NaN or infinity)")
    if storage != EMBCACHE_STORE_F32:
        return storage_value_error(where, value, storage)   # core/codec.pxi
    return InvalidVectorError(
        f"{where} = {value!r} overflows float32 (largest finite is 3.4028235e+38)")


cdef int check_rows(const Source *first, Py_ssize_t row_stride, Py_ssize_t start,
                    Py_ssize_t stop, str what, int storage) except -1:
    """Every value of rows [start, stop) storable in `storage`, else the error
    naming row and element."""
    cdef Source row = first[0]
    cdef Py_ssize_t i, bad
    for i in range(start, stop):
        row.data = first.data + i * row_stride
        bad = first_unstorable_in(storage, &row)
        if bad >= 0:
            raise unstorable_error(  # put's one vector (read_matrix) named as put names it
                f"{what}[{bad}]" if what == "vector" else f"{what}[{i}, {bad}]", &row, bad,
                storage)
    return 0


# --- arguments --------------------------------------------------------------------

cdef object as_count(object value, str name, Py_ssize_t low, Py_ssize_t high):
    """`value` as a Python int in [low, high]: an int or numpy integer, never a bool."""
    if isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if number < low or number > high:
        raise ArgumentValueError(f"{name} must be between {low} and {high}, got {number}")
    return number


cdef object as_positive_number(object value, str name):
    """`value` as a float > 0 (a number too large for a float counts as infinity)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number, got {type(value).__name__}")
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if math.isnan(as_float) or as_float <= 0:
        raise ArgumentValueError(f"{name} must be a number > 0, got {value!r}")
    return as_float


cdef double read_clock(object clock) except? -1.0:
    """One reading of a user clock, as finite seconds."""
    value = clock()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            f"clock() must return a number of seconds, got {type(value).__name__}")
    cdef double now
    try:
        now = float(value)
    except OverflowError:
        now = INFINITY
    if not isfinite(now):
        raise ArgumentValueError(f"clock() returned {now!r}; it must return finite seconds")
    return now
