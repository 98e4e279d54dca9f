# MgetReader: a reply to MGET read chunk by chunk straight into a float32
# matrix (core/resp.h does the reading; this class holds its state and arrays).
from libc.stdint cimport int64_t


cdef extern from "core/resp.h":
    ctypedef struct resp_mget:
        int64_t n
        int64_t dim
        int64_t hits
        int64_t errors
        size_t err_len
        char *err
    int RESP_MORE, RESP_DONE, RESP_NEED_ROWS, RESP_REPLY_ERROR, RESP_PROTOCOL
    void resp_mget_init(resp_mget *r, int64_t n, int64_t dim, int compact,
                        float *rows, cnp.intp_t *index)
    void resp_mget_set_rows(resp_mget *r, float *rows)
    void resp_mget_release(resp_mget *r)
    int resp_mget_feed(resp_mget *r, const unsigned char *p, size_t length,
                       size_t *used) nogil

MGET_MORE = RESP_MORE
MGET_DONE = RESP_DONE
MGET_REPLY_ERROR = RESP_REPLY_ERROR
MGET_PROTOCOL = RESP_PROTOCOL
DEF FEED_NOGIL_BYTES = 65536
DEF FEED_BUSY = -1                # a feed is running (or raised): no other may start


cdef class MgetReader:
    """Reads one RESP reply to ``MGET`` of `n` keys, fed in chunks, into float32
    rows of dimension `dim` (None: that of the first valid value), checking every
    value as embcache.tier.wire.decode_values does (header, dimension, length,
    finiteness) and copying each float32 payload once, or decoding a compact one
    (float16, bfloat16, int8: the header's dtype says which) into its row.

    Without `out`, valid values fill ``rows`` in order and ``index`` holds their
    positions; with `out` (a writable C-contiguous float32 (n, dim) array, zero
    filled) value i goes to ``out[i]`` and ``rows`` is `out`. ``errors`` counts
    the values present but invalid (absent ones are not errors).

    ``feed(data)`` returns MGET_MORE (send more), MGET_DONE (``extra``: bytes of
    that chunk after the reply), MGET_REPLY_ERROR (the reply is an error line:
    ``error_text``) or MGET_PROTOCOL (not a reply of that shape); after anything
    but MGET_MORE, feeding again is an error, as is a feed while another runs (in
    another thread) or after one raised (the rows could not be allocated)."""

    cdef resp_mget state
    cdef object matrix
    cdef object positions
    cdef int status
    cdef Py_ssize_t leftover
    cdef bint compact

    def __cinit__(self, Py_ssize_t n, dim=None, out=None):
        cdef Py_ssize_t d = 0
        cdef float *rows = NULL
        if n < 0:
            raise ArgumentValueError(f"n must be >= 0, got {n}")
        if dim is not None:
            d = operator.index(dim)
            if d < 1:
                raise ArgumentValueError(f"dim must be >= 1 or None, got {dim}")
        elif out is not None:
            raise ArgumentValueError("out needs dim: the rows' shape must be known")
        self.positions = np.empty(n, dtype=np.intp)
        self.compact = out is None
        if out is not None:
            if not (
                isinstance(out, np.ndarray)
                and out.dtype == np.float32
                and out.flags.c_contiguous
                and out.flags.writeable
                and out.shape == (n, d)
            ):
                raise ArgumentValueError(
                    f"out must be a writable C-contiguous float32 array of shape ({n}, {dim})"
                )
            self.matrix = out
        elif d:
            self.matrix = np.empty((n, d), dtype=np.float32)
        if self.matrix is not None:
            rows = <float *>cnp.PyArray_DATA(self.matrix)
        resp_mget_init(&self.state, n, d, self.compact, rows,
                       <cnp.intp_t *>cnp.PyArray_DATA(self.positions))
        self.status = RESP_MORE

    def __dealloc__(self):
        resp_mget_release(&self.state)

    def feed(self, const unsigned char[::1] data not None):
        """Read the next chunk of the reply; the status (see the class)."""
        cdef size_t used = 0, done = 0, length = data.shape[0]
        cdef int status
        if self.status != RESP_MORE:
            if self.status == FEED_BUSY:
                raise ArgumentValueError("the reader is being fed by another thread, or an "
                                         "earlier feed failed")
            raise ArgumentValueError("the reply was already read")
        if length == 0:
            return RESP_MORE
        # the GIL is released around long chunks: mark the reader busy first, so a
        # second thread cannot run the C reader on the same state; a feed that
        # raises (no memory for the rows) leaves it marked, never half-ready
        self.status = FEED_BUSY
        while True:
            if length - done >= FEED_NOGIL_BYTES:
                with nogil:
                    status = resp_mget_feed(&self.state, &data[done], length - done, &used)
            else:
                status = resp_mget_feed(&self.state, &data[done], length - done, &used)
            done += used
            if status != RESP_NEED_ROWS:
                break
            self.matrix = np.empty((self.state.n, self.state.dim), dtype=np.float32)
            resp_mget_set_rows(&self.state, <float *>cnp.PyArray_DATA(self.matrix))
            if done == length:
                self.status = RESP_MORE
                return RESP_MORE
        self.status = status
        self.leftover = length - done
        return status

    @property
    def done(self):
        """True once the whole reply was read."""
        return self.status == RESP_DONE

    @property
    def extra(self):
        """Bytes of the last chunk fed that follow the reply."""
        return self.leftover

    @property
    def error_text(self):
        """The text of an error reply (its first 256 bytes), else ''."""
        return self.state.err[:self.state.err_len].decode("utf-8", "replace")

    @property
    def errors(self):
        """Values present but invalid so far."""
        return self.state.errors

    @property
    def rows(self):
        """The rows read (see the class)."""
        cdef Py_ssize_t hits = self.state.hits
        if self.matrix is None:
            return np.empty((0, 0), dtype=np.float32)
        if not self.compact or hits == self.state.n:
            return self.matrix
        return self.matrix[:hits]

    @property
    def index(self):
        """Positions (ascending) of the valid values, as intp."""
        if self.state.hits == self.state.n:
            return self.positions
        return self.positions[:self.state.hits]
