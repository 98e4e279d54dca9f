# Slab rows: dense, so resident memory follows the live rows. Taking and freeing
# a row of a slab, the page size of a slab's chunks as its writer reaches them,
# and giving back the pages past its live rows. Free functions over the Table
# (core/table.pxi), without the GIL; the caller holds the cache lock.


# A slab gives back the pages past its live rows once they come to this much
# (a margin, so that a slab that shrinks and grows a little keeps its pages).
DEF TRIM_BYTES = 262144


cdef inline size_t resident_bytes(const Slab *slab) noexcept nogil:
    """What the slab holds resident, as the kernel counts it (huge pages whole)."""
    return embcache_slab_resident(slab.rows, <size_t>slab.written * slab.stride, slab_bytes(slab))


cdef inline size_t chunk_end(size_t n) noexcept nogil:
    """n rounded up to a whole 2 MiB chunk."""
    return (n + EMBCACHE_HUGE_PAGE - 1) & ~(EMBCACHE_HUGE_PAGE - 1)


cdef void advise_chunks(Table *t, int32_t i, size_t start, size_t stop) noexcept nogil:
    """Decide the page size of slab i's chunks [start, stop) (2 MiB each), which
    its writer is about to touch for the first time since it was reserved or
    trimmed (a cache without a fixed dim; chunks up to chunk_end(written bytes)
    are decided). The first chunk stays on 4 KiB pages, so a dimension with few
    rows costs few pages; a later one is advised for huge pages (one fault per
    2 MiB, not 512) when slab i holds the huge frontier: no other slab does, or
    the one that did ends its rows on a chunk boundary. So at most one slab
    holds a huge page partly past its rows."""
    cdef Slab *owner
    while start < stop:
        if start and t.huge_slab != i:
            if t.huge_slab >= 0:
                owner = &t.slabs[t.huge_slab]
                if (<size_t>owner.written * owner.stride) % EMBCACHE_HUGE_PAGE:
                    start += EMBCACHE_HUGE_PAGE
                    continue
            t.huge_slab = i
        if start:
            embcache_slab_advise(t.slabs[i].rows, slab_bytes(&t.slabs[i]), start,
                                 start + EMBCACHE_HUGE_PAGE, 1)
        start += EMBCACHE_HUGE_PAGE


cdef inline row_t take_row(Table *t, int32_t i, slot_t s) noexcept nogil:
    """A row of slab i for entry s: the hole if there is one, else the next row
    past the live ones (mapped in as it is first written)."""
    cdef Slab *slab = &t.slabs[i]
    cdef row_t row = slab.hole
    cdef size_t decided, end
    if row != NO_ROW:
        slab.hole = NO_ROW
    else:
        row = slab.used
        slab.used += 1
        if slab.used > slab.written:
            if not t.dim:
                decided = chunk_end(<size_t>slab.written * slab.stride)
                end = chunk_end(<size_t>slab.used * slab.stride)
                if end > decided:
                    advise_chunks(t, i, decided, end)
            slab.written = slab.used
    set_owner(slab, row, s)
    return row


cdef void release_row(Table *t, Slab *slab, row_t r) noexcept nogil:
    """Free row r. The first row freed below the last one stays a hole, which the
    next row taken fills (a full cache's put then copies nothing extra); a second
    is filled by the last row, so the live rows stay dense."""
    cdef row_t last = slab.used - 1
    cdef slot_t mover
    if r != last:
        if slab.hole == NO_ROW:
            slab.hole = r
            return
        mover = owner_at(slab, last)
        memcpy(row_at(slab, r), row_at(slab, last), slab.stride)   # the owner slot moves too
        t.entries[mover].row = r
    slab.used = last
    if slab.hole != NO_ROW and slab.hole == slab.used - 1:
        slab.hole = NO_ROW
        slab.used -= 1


cdef void trim(Table *t, int32_t i) noexcept nogil:
    """Give back the pages of slab i past its live rows: all of them once the slab
    is empty (in a cache without a fixed dim, unless the last put used it: a
    dimension that fell out of use costs no memory), else when they come to
    TRIM_BYTES."""
    cdef Slab *slab = &t.slabs[i]
    if slab.written == slab.used:
        return
    if ((slab.used or t.dim or i == t.last_slab)
            and <size_t>(slab.written - slab.used) * slab.stride < TRIM_BYTES):
        return
    cdef size_t keep = <size_t>slab.used * slab.stride
    cdef size_t decided = chunk_end(<size_t>slab.written * slab.stride)
    embcache_slab_trim(slab.rows, slab_bytes(slab), keep, <size_t>slab.written * slab.stride)
    slab.written = slab.used
    if not t.dim:
        # the chunk cut by `keep` is now on 4 KiB pages (embcache_slab_trim); the
        # chunks past it go back to undecided, advised against huge pages
        if chunk_end(keep) < decided:
            embcache_slab_advise(slab.rows, slab_bytes(slab), chunk_end(keep), decided, 0)
        if t.huge_slab == i:
            t.huge_slab = -1
