# The batch protocol of a segment, as the core's (embcache/core/batch.pxi):
# SharedPutBatch and SharedGetBatch, what SharedEmbeddingCache.put_batch and
# get_batch return, so that the asyncio facade, single flight (embcache.flight)
# and CachedEmbedder drive a segment with the very code they drive a
# SyncEmbeddingCache with. Also the cache's in-process single-flight registry
# (``flights``) and its monitoring label. Included at the end of _segment.pyx.
#
# A SharedPutBatch is bound to its cache and to its contents: take() checks
# the rows it is given into a private float32 copy (as the segment's storage
# will hold them), store() publishes from that copy, so a caller's buffer that
# changes between the two changes nothing. A SharedGetBatch reads keys into
# its matrix in slices; a miss row is zero.

from embcache._core import decode_rows, encode_rows
from embcache.core.names import NAME_PATTERN, check_name
from embcache.core.names import track as track_named


# embcache.flight.registry.Flights, imported on first use: single flight sits
# above the segment and imports nothing of it
cdef object _Flights = None


cdef object segment_flights(SharedEmbeddingCache cache):
    """The cache's in-process single-flight registry, made on first use."""
    global _Flights
    if cache.flights_registry is None:
        if _Flights is None:
            from embcache.flight.registry import Flights
            _Flights = Flights
        flights = _Flights(cache, CacheKey, SharedPutBatch, as_key_tuple)
        if cache.flights_registry is None:   # threads racing: the first one set wins
            cache.flights_registry = flights
    return cache.flights_registry


cdef object batch_rows(SharedEmbeddingCache cache, object result, list missing):
    """A compute's `result` as rows: a list of taken SharedPutBatch of `cache`
    holding exactly the `missing` keys in order (what CachedEmbedder's compute
    answers) becomes their rows; anything else is returned as it is."""
    if not (type(result) is list and result and isinstance(result[0], SharedPutBatch)):
        return result
    cdef Py_ssize_t start = 0
    keys = tuple(missing)
    for i, batch in enumerate(result):
        if not isinstance(batch, SharedPutBatch) or (<SharedPutBatch>batch).cache is not cache:
            raise ArgumentValueError(
                f"compute returned a list whose item {i} is not a SharedPutBatch of this cache")
        b = <SharedPutBatch>batch
        if b.keys != keys[start:start + b.n] or b.taken != b.n:
            raise ArgumentValueError(
                f"compute returned SharedPutBatch objects that do not hold the missing keys "
                f"in order, taken (item {i})")
        start += b.n
    if start != len(keys):
        raise ArgumentValueError(
            f"compute returned SharedPutBatch objects for {start} keys, but {len(keys)} are missing")
    if len(result) == 1:
        return (<SharedPutBatch>result[0]).rows
    return np.concatenate([(<SharedPutBatch>b).rows for b in result])


cdef str label_of(object label, str path):
    """The monitoring label: `label` checked as SyncEmbeddingCache checks ``name``;
    None: the segment's file name when it is a valid label (every process
    attached then reports under one name), else a generated ``embcache-N``."""
    if label is None:
        base = os.path.basename(path)
        if NAME_PATTERN.fullmatch(base) is not None:
            return base
    return check_name(label, "label")


cdef inline Py_ssize_t batch_index(object value, str what, Py_ssize_t high) except -1:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= high:
        raise ArgumentValueError(f"{what} must be between 0 and {high}, got {value!r}")
    return value


cdef inline Py_ssize_t batch_stop(object stop, Py_ssize_t n) except -1:
    return n if stop is None else batch_index(stop, "stop", n)


cdef cnp.ndarray read_batch_matrix(SharedEmbeddingCache cache, object matrix, Py_ssize_t n,
                                   str what):
    """The caller's (n, dim) rows as a real array, shape and dimension checked
    (values are checked by take); put's one vector (what="vector") as one row."""
    if n == 0 and isinstance(matrix, (list, tuple)) and len(matrix) == 0:
        return np.empty((0, cache.seg.L.dim), dtype=np.float32)
    try:
        arr = np.asarray(matrix)
    except Exception as exc:
        raise VectorTypeError(f"{what} cannot be read as an array: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise VectorTypeError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    if n == 1 and what == "vector":
        if arr.ndim != 1:
            raise InvalidVectorError(f"{what} must have 1 dimension(s), got shape {arr.shape}")
        arr = arr[None]
    elif arr.ndim != 2:
        raise InvalidVectorError(
            f"{what} must have 2 dimension(s) (len(keys), dim), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidVectorError(f"{what} has {arr.shape[0]} rows for {n} keys")
    if n and arr.shape[1] == 0:
        raise InvalidVectorError(f"{what} rows are empty; an embedding needs at least one value")
    if n and arr.shape[1] != cache.seg.L.dim:
        raise DimensionMismatchError(
            f"{what} has dim {arr.shape[1]}; this cache takes dim {cache.seg.L.dim}")
    return arr


@cython.final
@cython.auto_pickle(False)
cdef class SharedPutBatch:
    """Rows to store under keys, checked by SharedEmbeddingCache.put_batch: the
    same protocol as the core's PutBatch. ``take(start, stop)`` checks rows
    [start, stop) into the private copy (in order, continuing from ``taken``);
    ``store(start, stop)`` stores taken rows into the batch's segment. ``rows``
    is the private (n, dim) float32 copy, read-only: the values the segment will
    hold (for a compact storage, what its rows decode to)."""

    cdef readonly SharedEmbeddingCache cache
    cdef readonly tuple keys
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t dim
    cdef readonly Py_ssize_t taken
    cdef readonly str what
    cdef object source
    cdef cnp.ndarray private

    def __init__(self):
        raise TypeError("SharedPutBatch objects are made by SharedEmbeddingCache.put_batch")

    @staticmethod
    cdef SharedPutBatch create(SharedEmbeddingCache cache, object keys, object matrix, str what,
                               object dim):
        cdef SharedPutBatch b = SharedPutBatch.__new__(SharedPutBatch)
        b.cache = cache
        b.what = what
        b.keys = as_key_tuple(keys, "put_batch")
        b.n = len(b.keys)
        if cache.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        b.source = read_batch_matrix(cache, matrix, b.n, what)
        b.dim = cache.seg.L.dim if b.n else 0
        if b.n and dim is not None:
            if isinstance(dim, bool) or not isinstance(dim, int):
                raise ArgumentTypeError(f"dim must be an int, got {type(dim).__name__}")
            if dim != b.dim:
                raise DimensionMismatchError(
                    f"{what} has dim {b.dim}, but this batch needs dim {dim}")
        b.private = np.empty((b.n, b.dim), dtype=np.float32)
        return b

    @property
    def rows(self):
        """The private (n, dim) float32 copy of the taken rows, read-only."""
        cdef cnp.ndarray view = <cnp.ndarray>self.private.view()
        cnp.PyArray_CLEARFLAGS(view, cnp.NPY_ARRAY_WRITEABLE)
        return view

    def take(self, start=0, stop=None):
        """Check rows [start, stop) of the caller's matrix (stop: the end) into the
        private rows, as the segment's storage will hold them; slices follow each
        other from row 0. A bad value raises (InvalidVectorError names it) and
        the batch keeps only the rows taken before."""
        cdef Py_ssize_t start_ = batch_index(start, "start", self.n)
        cdef Py_ssize_t stop_ = batch_stop(stop, self.n)
        if start_ != self.taken or stop_ < start_:
            raise ArgumentValueError(
                f"rows [{start_}, {stop_}) do not continue the taken rows [0, {self.taken})")
        if stop_ == start_:
            return
        what = self.what if (start_ == 0 and stop_ == self.n) else f"{self.what}[{start_}:{stop_}]"
        cdef cnp.ndarray rows = self.cache.checked_rows(self.source[start_:stop_], 2, what)
        storage = self.cache.storage
        if storage != "float32":   # the values the segment will hold: the codec's round trip
            rows = decode_rows(encode_rows(rows, storage), storage, self.dim)
        self.private[start_:stop_] = rows
        self.taken = stop_

    def store(self, start=0, stop=None):
        """Store taken rows [start, stop) (stop: the end) into the batch's segment,
        row i under keys[i], as put_many would."""
        cdef Py_ssize_t start_ = batch_index(start, "start", self.n)
        cdef Py_ssize_t stop_ = batch_stop(stop, self.n)
        if not start_ <= stop_ <= self.taken:
            raise ArgumentValueError(
                f"rows [{start_}, {stop_}) are not among the taken rows [0, {self.taken})")
        cdef const float *base = <const float *>cnp.PyArray_DATA(self.private)
        cdef double now = self.cache.clock_now()
        cdef Py_ssize_t i
        for i in range(start_, stop_):
            self.cache.store_row(<CacheKey>self.keys[i], base + i * self.dim, now)

    def __len__(self):
        return self.n

    def __repr__(self):
        return (f"SharedPutBatch(n={self.n}, dim={self.dim}, taken={self.taken}, "
                f"what={self.what!r})")


@cython.final
@cython.auto_pickle(False)
cdef class SharedGetBatch:
    """Keys to look up, checked by SharedEmbeddingCache.get_batch: the same
    protocol as the core's GetBatch. ``read(start, stop)`` looks keys [start,
    stop) up (in order, continuing from the last read) into ``matrix`` (a miss
    row is zero) and ``found``."""

    cdef readonly SharedEmbeddingCache cache
    cdef readonly tuple keys
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t dim
    cdef readonly cnp.ndarray matrix
    cdef readonly cnp.ndarray found
    cdef Py_ssize_t done

    def __init__(self):
        raise TypeError("SharedGetBatch objects are made by SharedEmbeddingCache.get_batch")

    @staticmethod
    cdef SharedGetBatch create(SharedEmbeddingCache cache, object keys, object out):
        cdef SharedGetBatch b = SharedGetBatch.__new__(SharedGetBatch)
        b.cache = cache
        b.keys = as_key_tuple(keys, "get_batch")
        b.n = len(b.keys)
        if cache.seg.base == NULL:
            raise SharedSegmentError("the SharedEmbeddingCache is closed")
        b.dim = cache.seg.L.dim
        if out is None:
            b.matrix = np.empty((b.n, b.dim), dtype=np.float32)
        else:   # checked as SyncEmbeddingCache.get_batch checks it, with its errors
            check_out(cache, out, b.n)
            b.matrix = out
        b.found = np.zeros(b.n, dtype=np.bool_)
        return b

    def read(self, start=0, stop=None):
        """Look up keys [start, stop) (stop: the end) into their rows."""
        cdef Py_ssize_t start_ = batch_index(start, "start", self.n)
        cdef Py_ssize_t stop_ = batch_stop(stop, self.n)
        if start_ != self.done or stop_ < start_:
            raise ArgumentValueError(
                f"keys [{start_}, {stop_}) do not continue the keys read [0, {self.done})")
        cdef float *base = <float *>cnp.PyArray_DATA(self.matrix)
        cdef char *hit = <char *>cnp.PyArray_DATA(self.found)
        cdef double now = self.cache.clock_now()
        cdef Py_ssize_t i
        for i in range(start_, stop_):
            if self.cache.fetch_row(<CacheKey>self.keys[i], base + i * self.dim, now, 1):
                hit[i] = 1
            else:
                memset(base + i * self.dim, 0, self.dim * sizeof(float))
        self.done = stop_

    @property
    def read_count(self):
        """Keys looked up so far."""
        return self.done

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"SharedGetBatch(n={self.n}, dim={self.dim}, read={self.done})"
