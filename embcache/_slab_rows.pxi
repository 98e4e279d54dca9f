# Slab rows: dense, so resident memory follows the live rows. Taking and freeing
# a row of a slab, the page size of a slab's chunks as its writer reaches them,
# and giving back the pages past its live rows. Free functions over the Table
# (_table.pxi), without the GIL; the caller holds the cache lock.


# A slab gives back the pages past its live rows once they come to this much
# (a margin, so that a slab that shrinks and grows a little keeps its pages).
DEF TRIM_BYTES = 262144


cdef inline size_t resident_bytes(const Slab *slab) noexcept nogil:
    """What the slab holds resident, as the kernel counts it (huge pages whole)."""
    return embcache_slab_resident(slab.rows, <size_t>slab.written * slab.stride, slab_bytes(slab))


cdef void advise_chunks(Table *t, int32_t i, size_t end) noexcept nogil:
    """Decide the page size of slab i's chunks up to byte `end`, before the
    writer first touches them (a cache without a fixed dim). The first 2 MiB
    chunk stays on 4 KiB pages, so a dimension with few rows costs few pages; a
    later chunk is advised for huge pages (one fault per 2 MiB, not 512) when
    slab i holds the huge frontier: no other slab does, or the one that did has
    filled its last huge chunk. So at most one slab holds a huge page partly
    past its rows."""
    cdef Slab *slab = &t.slabs[i]
    cdef Slab *owner
    cdef size_t start
    while slab.advised < end:
        start = slab.advised
        slab.advised += EMBCACHE_HUGE_PAGE
        if start == 0:
            continue
        if t.huge_slab >= 0 and t.huge_slab != i:
            owner = &t.slabs[t.huge_slab]
            if <size_t>owner.written * owner.stride < owner.advised:
                continue
        t.huge_slab = i
        embcache_slab_advise(slab.rows, slab_bytes(slab), start, slab.advised, 1)


cdef inline row_t take_row(Table *t, int32_t i, slot_t s) noexcept nogil:
    """A row of slab i for entry s: the hole if there is one, else the next row
    past the live ones (mapped in as it is first written)."""
    cdef Slab *slab = &t.slabs[i]
    cdef row_t row = slab.hole
    if row != NO_ROW:
        slab.hole = NO_ROW
    else:
        row = slab.used
        slab.used += 1
        if slab.used > slab.written:
            if <size_t>slab.used * slab.stride > slab.advised:
                advise_chunks(t, i, <size_t>slab.used * slab.stride)
            slab.written = slab.used
    owner_at(slab, row)[0] = s
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
        mover = owner_at(slab, last)[0]
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
    cdef size_t decided
    embcache_slab_trim(slab.rows, slab_bytes(slab), keep, <size_t>slab.written * slab.stride)
    slab.written = slab.used
    if not t.dim:
        # the chunk cut by `keep` is now on 4 KiB pages (embcache_slab_trim); the
        # chunks past it go back to undecided, advised against huge pages
        decided = (keep + EMBCACHE_HUGE_PAGE - 1) & ~(EMBCACHE_HUGE_PAGE - 1)
        if decided < slab.advised:
            embcache_slab_advise(slab.rows, slab_bytes(slab), decided, slab.advised, 0)
            slab.advised = decided
        if t.huge_slab == i:
            t.huge_slab = -1
