# Rows in the table's storage: what one entry's row costs, and writing and
# reading a row's values (core/convert.h encodes and decodes; float32 rows are
# plain copies, tested first so the float32 paths stay as they were).
#
# Owns: entry_bytes (an entry's accounted bytes in a storage), a slab's row
# bytes, write_row, the GIL-dropping row copy of get and the array it copies
# into (core/row_arrays.h: its block from a small pool; batch lookups decode
# in copy_out_row, core/table.pxi), and the largest
# dimension a cache's budget holds (check_dim's bound). Free functions over the
# Table (core/table.pxi); the callers hold the cache lock where a table is read.


cdef inline size_t row_bytes_of(const Slab *slab) noexcept nogil:
    """Bytes of one encoded vector of the slab: its stride less the owner slot."""
    return slab.stride - sizeof(slot_t)


cdef extern from "core/row_arrays.h":
    int embc_row_arrays_init() except -1
    object embc_row_array(cnp.npy_intp dim)

embc_row_arrays_init()  # its numpy handler capsule (after cnp.import_array, _core.pyx)


cdef inline Py_ssize_t entry_bytes(int storage, dim_t dim) noexcept nogil:
    """What one live entry of `dim` costs in a table of `storage`: its encoded row
    (core/convert.h) and ENTRY_OVERHEAD."""
    if storage == EMBCACHE_STORE_F32:   # the put path's case, without the codec's switch
        return dim * 4 + ENTRY_OVERHEAD
    return <Py_ssize_t>embcache_row_bytes(storage, <size_t>dim) + ENTRY_OVERHEAD


cdef inline Py_ssize_t slab_entry_bytes(const Slab *slab) noexcept nogil:
    """entry_bytes of slab's dimension, from the slab (the put path's form)."""
    return <Py_ssize_t>row_bytes_of(slab) + ENTRY_OVERHEAD


cdef inline void write_row(Table *t, int32_t slab_index, char *row, const Source *src) noexcept nogil:
    """Row = `src` (checked storable) encoded in the table's storage: a float32
    row as copy_in writes it; a compact one encoded from the float32 values
    (converted into the table's scratch row first when they are float64 or
    strided; add_slab sized it), or copied as is when `src` is already encoded."""
    if t.storage != EMBCACHE_STORE_F32:
        if src.encoded:
            memcpy(row, src.data, row_bytes_of(&t.slabs[slab_index]))
        elif not src.is_f64 and src.stride == 4:
            embcache_encode_row(t.storage, <const float *>src.data, <size_t>src.n, row)
        else:
            copy_in(t.scratch, src)
            embcache_encode_row(t.storage, t.scratch, <size_t>src.n, row)
    else:
        copy_in(<float32_t *>row, src)


cdef inline void copy_row_out(const Table *t, float32_t *dst, const char *row,
                              dim_t dim) noexcept:
    """A row's float32 values into `dst` (read_row), dropping the GIL for long
    rows (the caller holds the cache lock)."""
    cdef size_t nbytes = <size_t>dim * 4
    if t.storage == EMBCACHE_STORE_F32:
        if nbytes >= GIL_FREE_COPY_BYTES:
            with nogil:
                memcpy(dst, row, nbytes)
        else:
            memcpy(dst, row, nbytes)
    elif nbytes >= GIL_FREE_COPY_BYTES:
        with nogil:
            embcache_decode_row(t.storage, row, <size_t>dim, dst)
    else:
        embcache_decode_row(t.storage, row, <size_t>dim, dst)


cdef dim_t largest_fitting_dim(const Table *t) noexcept nogil:
    """The largest dim of which one entry (its row in the table's storage, the
    entry overhead and the policy's bytes) fits the budget less the policy's
    fixed bytes; 0 when none does. check_dim compares against it."""
    cdef Py_ssize_t room = (t.memory_budget_bytes - t.policy_fixed_bytes
                            - t.policy_entry_bytes - ENTRY_OVERHEAD)
    cdef size_t per_value = embcache_row_bytes(t.storage, 2) - embcache_row_bytes(t.storage, 1)
    cdef dim_t d
    if room <= 0:
        return 0
    d = <dim_t>(<size_t>room // per_value)
    while d > 0 and embcache_row_bytes(t.storage, <size_t>d) > <size_t>room:
        d -= 1
    return d
