# Shrinking the entry table: when entries become fewer (larger vectors evict
# smaller ones, removals, expiry), the live entries move down into the table's
# first slots and its tail goes back to the OS, the index with it. Free functions
# over the Table (core/table.pxi), without the GIL; the caller holds the lock.
#
# Only a table of its own mapping (core/table_mem.h) shrinks: a smaller one
# costs too little to be worth moving entries for. It shrinks at the put after
# a removal (eviction, expiry, removal) that leaves a quarter of its slots free
# (discard sets resize_above to -1, which sends reserve_slots past its one test):
# a table just grown (by up to double) is not shrunk while it fills. It shrinks
# to an eighth more slots than entries, so
# the O(capacity) move follows at least an eighth of the capacity in removals,
# and growing again (by at least an eighth, reserve_slots) as many puts.


cdef inline void set_shrink_mark(Table *t) noexcept nogil:
    """The table was resized: no shrinking before a removal leaves fewer entries
    than three quarters of its slots (discard compares with shrink_mark)."""
    t.resize_above = t.entry_capacity
    if <size_t>t.entry_capacity * sizeof(Entry) >= 2 * EMBCACHE_OWN_MAP_BYTES:
        t.shrink_mark = t.entry_capacity - t.entry_capacity // 4
    else:
        t.shrink_mark = 0


cdef void move_entry(Table *t, slot_t s, slot_t d) noexcept nogil:
    """Move live entry `s` to free slot `d`: every link to it follows (policy,
    expiry list, index cell, its row's owner slot)."""
    cdef Entry *e = &t.entries[d]
    cdef size_t cell = cell_of_slot(t, s)      # reads s's digest, still in place
    memcpy(e, &t.entries[s], sizeof(Entry))
    policy_on_move(t, s, d)
    if e.expiry_prev != NO_SLOT:
        t.entries[e.expiry_prev].expiry_next = d
    else:
        t.expiry_head = d
    if e.expiry_next != NO_SLOT:
        t.entries[e.expiry_next].expiry_prev = d
    else:
        t.expiry_tail = d
    t.cells[cell].slot = d
    set_owner(&t.slabs[e.slab], e.row, d)


cdef void shrink_entries(Table *t, Py_ssize_t count) noexcept nogil:
    """Shrink the entry table to an eighth more slots than its entries (and at
    least `count` free), the index to 2-4 cells per slot. Changes no entry, order
    or count; if memory will not give way the table keeps its size."""
    cdef Py_ssize_t keep = max(<Py_ssize_t>t.size + max(count, <Py_ssize_t>t.size // 8),
                               <Py_ssize_t>FIRST_ENTRY_SLOTS)
    cdef slot_t capacity = t.entry_capacity
    cdef slot_t low = NO_SLOT
    cdef slot_t s, d, following, i
    cdef size_t cells = MIN_INDEX_CELLS
    cdef Entry *shrunk
    if keep >= capacity:
        t.resize_above = capacity   # not again before the next removal
        return
    # the free slots below `keep`, chained through recency_next (the others are
    # dropped); there are at least as many as live entries at or above `keep`
    s = t.free_slot_head
    while s != NO_SLOT:
        following = t.entries[s].recency_next
        if s < keep:
            t.entries[s].recency_next = low
            low = s
        s = following
    # every live entry is on the expiry list: move those at or above `keep` down
    s = t.expiry_head
    while s != NO_SLOT:
        following = t.entries[s].expiry_next
        if s >= keep:
            d = low
            low = t.entries[d].recency_next
            move_entry(t, s, d)
        s = following
    shrunk = <Entry *>embcache_table_resize(t.entries, <size_t>capacity * sizeof(Entry),
                                            <size_t>keep * sizeof(Entry), ENTRY_ALIGN)
    if shrunk == NULL:
        # keep the size: slots [keep, capacity) are all free now
        for i in range(capacity - 1, <slot_t>keep - 1, -1):
            t.entries[i].recency_next = low
            low = i
        t.free_slot_head = low
        t.resize_above = capacity   # not again before the table grows
        t.shrink_mark = 0
        return
    t.entries = shrunk
    t.entry_capacity = <slot_t>keep
    t.free_slot_head = low
    set_shrink_mark(t)
    while cells < 2 * <size_t>keep:
        cells *= 2
    if cells < t.cell_mask + 1:
        resize_index(t, cells)      # on failure the larger index stays (still valid)
