# The table: index, entry table, expiry list, slabs and accounting, as free
# functions over one Table struct.
#
# Owns: allocation and growth (entries, index, slabs), lookup, storing and
# discarding entries, making room, reading rows out. Recency and victim choice
# are the policy's (core/policy.pxi): the table calls its hooks and decides nothing
# about order itself. Every function here runs without the GIL and calls no
# Python; the caller holds the cache lock. Those that allocate return -1 on
# failure having changed nothing, and the caller raises MemoryError.


# Bytes of metadata accounted to each live entry: its Entry row, the most index
# cells one entry can cost (the index keeps 2 to 4 cells per entry slot) and the
# owner slot its vector's row carries.
ENTRY_OVERHEAD_BYTES = sizeof(Entry) + 4 * sizeof(Cell) + sizeof(slot_t)
cdef Py_ssize_t ENTRY_OVERHEAD = ENTRY_OVERHEAD_BYTES
cdef slot_t MAX_SLOTS = 2 ** 31 - 2


cdef inline size_t slab_bytes(const Slab *slab) noexcept nogil:
    return <size_t>slab.capacity * slab.stride


cdef inline char *row_at(const Slab *slab, row_t r) noexcept nogil:
    return slab.rows + <size_t>r * slab.stride


cdef inline slot_t owner_at(const Slab *slab, row_t r) noexcept nogil:
    """The slot of the entry whose vector is in row r: the row's last 4 bytes
    (unaligned when the storage's row bytes are not a multiple of 4)."""
    cdef slot_t s
    memcpy(&s, slab.rows + <size_t>r * slab.stride + row_bytes_of(slab), sizeof(slot_t))
    return s


cdef inline void set_owner(Slab *slab, row_t r, slot_t s) noexcept nogil:
    memcpy(slab.rows + <size_t>r * slab.stride + row_bytes_of(slab), &s, sizeof(slot_t))


cdef void table_init(Table *t, slot_t max_entries, Py_ssize_t budget, double ttl, dim_t dim,
                     bint user_clock, int storage) noexcept nogil:
    memset(t, 0, sizeof(Table))
    t.max_entries = max_entries
    t.memory_budget_bytes = budget
    t.ttl_seconds = ttl
    t.dim = dim
    t.user_clock = user_clock
    t.policy = POLICY_LRU
    t.storage = storage
    # float32 rows are never encoded from a scratch row: no dim ever needs one
    t.scratch_floats = <size_t>-1 if storage == EMBCACHE_STORE_F32 else 0
    t.free_slot_head = NO_SLOT
    t.recency_head = t.recency_tail = NO_SLOT
    t.expiry_head = t.expiry_tail = NO_SLOT
    t.last_slab = -1
    t.huge_slab = -1


cdef void release_slabs(Table *t) noexcept nogil:
    cdef int32_t i
    for i in range(t.n_slabs):
        embcache_slab_release(t.slabs[i].rows, slab_bytes(&t.slabs[i]))
    t.n_slabs = 0
    t.last_slab = -1
    t.huge_slab = -1
    t.entry_limit = 0
    if t.dim_cells != NULL:
        memset(t.dim_cells, 0xff, 2 * <size_t>t.slab_capacity * sizeof(int32_t))


cdef inline size_t dim_home(dim_t dim, size_t mask) noexcept nogil:
    return (<size_t>(<uint64_t>dim * 0x9E3779B97F4A7C15ULL >> 32)) & mask


cdef void index_slab(Table *t, int32_t i) noexcept nogil:
    """Enter slab i in the dim -> slab cells (there is always a free cell)."""
    cdef size_t mask = 2 * <size_t>t.slab_capacity - 1
    cdef size_t c = dim_home(t.slabs[i].dim, mask)
    while t.dim_cells[c] != -1:
        c = (c + 1) & mask
    t.dim_cells[c] = i


cdef void table_free(Table *t) noexcept nogil:
    if t.slabs != NULL:
        release_slabs(t)
        free(t.slabs)
        t.slabs = NULL
    free(t.dim_cells)
    t.dim_cells = NULL
    policy_free(t)
    free(t.scratch)
    t.scratch = NULL
    t.scratch_floats = 0
    embcache_table_free(t.entries, <size_t>t.entry_capacity * sizeof(Entry))
    t.entries = NULL
    embcache_table_free(t.cells, (t.cell_mask + 1) * sizeof(Cell))
    t.cells = NULL


# --- growth (only until the bounds are reached, never in the steady state) --------

cdef int32_t add_slab(Table *t, dim_t dim) noexcept nogil:
    """Register a slab for `dim`, reserving every row it may ever need; its index,
    or -1 when memory cannot be had."""
    cdef Slab *grown
    cdef int32_t cap
    cdef Slab *slab
    cdef int32_t *cells
    cdef int32_t i
    cdef float32_t *scratch
    if <size_t>dim > t.scratch_floats:     # a compact storage's scratch row: as long as
        scratch = <float32_t *>realloc(t.scratch, <size_t>dim * sizeof(float32_t))  # any dim
        if scratch == NULL:
            return -1
        t.scratch = scratch
        t.scratch_floats = <size_t>dim
    if t.n_slabs == t.slab_capacity:
        cap = 4 if t.slab_capacity == 0 else 2 * t.slab_capacity
        cells = <int32_t *>malloc(2 * <size_t>cap * sizeof(int32_t))
        if cells == NULL:
            return -1
        grown = <Slab *>realloc(t.slabs, cap * sizeof(Slab))
        if grown == NULL:
            free(cells)
            return -1
        memset(cells, 0xff, 2 * <size_t>cap * sizeof(int32_t))
        free(t.dim_cells)
        t.dim_cells = cells
        t.slabs = grown
        t.slab_capacity = cap
        for i in range(t.n_slabs):
            index_slab(t, i)
    slab = &t.slabs[t.n_slabs]
    slab.dim = dim
    slab.stride = embcache_row_bytes(t.storage, <size_t>dim) + sizeof(slot_t)
    slab.capacity = <row_t>min(<Py_ssize_t>t.max_entries,
                               t.memory_budget_bytes // entry_bytes(t.storage, dim))
    slab.rows = <char *>embcache_slab_reserve(slab_bytes(slab), t.dim != 0)
    if slab.rows == NULL:
        return -1
    slab.used = 0
    slab.hole = NO_ROW
    slab.written = 0
    index_slab(t, t.n_slabs)
    t.n_slabs += 1
    t.entry_limit = <slot_t>min(<Py_ssize_t>t.max_entries, <Py_ssize_t>t.entry_limit + slab.capacity)
    return t.n_slabs - 1


cdef int resize_index(Table *t, size_t cells) noexcept nogil:
    cdef Cell *old = t.cells
    cdef size_t old_cells = 0 if old == NULL else t.cell_mask + 1
    cdef Cell *fresh = <Cell *>embcache_table_alloc(cells * sizeof(Cell), sizeof(Cell))
    cdef size_t i, j
    if fresh == NULL:
        return -1
    memset(fresh, 0xff, cells * sizeof(Cell))    # slot == NO_SLOT everywhere
    for i in range(old_cells):
        if old[i].slot != NO_SLOT:
            j = old[i].tag & (cells - 1)
            while fresh[j].slot != NO_SLOT:
                j = (j + 1) & (cells - 1)
            fresh[j] = old[i]
    t.cells = fresh
    t.cell_mask = cells - 1
    embcache_table_free(old, old_cells * sizeof(Cell))
    return 0


cdef int grow_entries(Table *t, slot_t capacity) noexcept nogil:
    """Grow the entry table (and the index, to 2+ cells per slot) to `capacity`."""
    cdef Entry *grown
    cdef slot_t i
    cdef size_t cells = MIN_INDEX_CELLS
    if capacity <= t.entry_capacity:
        return 0
    while cells < 2 * <size_t>capacity:
        cells *= 2
    if cells > t.cell_mask + 1 and resize_index(t, cells) != 0:
        return -1
    if policy_reserve(t, capacity) != 0:
        return -1
    # a table of its own mapping grows by moving its pages, not by a copy
    grown = <Entry *>embcache_table_resize(t.entries, <size_t>t.entry_capacity * sizeof(Entry),
                                           <size_t>capacity * sizeof(Entry), ENTRY_ALIGN)
    if grown == NULL:
        return -1
    t.entries = grown
    # chain the new slots onto the free list, lowest index first
    for i in range(capacity - 1, t.entry_capacity - 1, -1):
        t.entries[i].recency_next = t.free_slot_head
        t.free_slot_head = i
    t.entry_capacity = capacity
    return 0


cdef int reserve_slots(Table *t, Py_ssize_t count) noexcept nogil:
    """Grow the entry table now, before anything is evicted, so that `count` new
    entries will find free slots (or the table is at its limit, where making room
    frees one): a failed allocation then changes nothing. A table a quarter
    unused shrinks instead (core/table_shrink.pxi), keeping room for `count`."""
    cdef Py_ssize_t want = min(<Py_ssize_t>t.entry_limit, <Py_ssize_t>t.size + count)
    cdef Py_ssize_t grown, fit, smallest
    cdef int32_t i
    if want <= t.resize_above:      # entry_capacity unless a shrink is due
        return 0
    if want > t.entry_capacity:
        grown = max(want, <Py_ssize_t>FIRST_ENTRY_SLOTS, 2 * <Py_ssize_t>t.entry_capacity)
        # Doubling, but not far past what the budget can hold: as many more entries
        # as its free bytes hold of the smallest dimension in use, yet at least an
        # eighth more each time (growth stays amortized). Compact rows make entries
        # many and small, and a doubled table half unused would be megabytes.
        smallest = 0
        for i in range(t.n_slabs):
            if smallest == 0 or slab_entry_bytes(&t.slabs[i]) < smallest:
                smallest = slab_entry_bytes(&t.slabs[i])
        if smallest:
            fit = (<Py_ssize_t>t.size
                   + (t.memory_budget_bytes - t.used_bytes) // (smallest + t.policy_entry_bytes))
            grown = max(want, min(grown, max(fit, <Py_ssize_t>t.entry_capacity
                                                  + <Py_ssize_t>t.entry_capacity // 8)))
        if grow_entries(t, <slot_t>min(<Py_ssize_t>t.entry_limit, grown)) != 0:
            return -1
        set_shrink_mark(t)
        return 0
    shrink_entries(t, count)
    return 0


cdef int32_t slab_for(const Table *t, dim_t dim) noexcept nogil:
    """The slab of `dim`, or -1: the last put's slab, else one probe of the dim cells."""
    cdef size_t mask, c
    cdef int32_t i
    if t.last_slab >= 0 and t.slabs[t.last_slab].dim == dim:
        return t.last_slab
    if t.dim_cells == NULL:
        return -1
    mask = 2 * <size_t>t.slab_capacity - 1
    c = dim_home(dim, mask)
    while True:
        i = t.dim_cells[c]
        if i == -1 or t.slabs[i].dim == dim:
            return i
        c = (c + 1) & mask


cdef int32_t prepare_put(Table *t, dim_t dim, Py_ssize_t count) noexcept nogil:
    """Everything a put of `count` vectors of `dim` may need to allocate, done
    before anything changes: the slab for `dim` and enough free slots. Returns the
    slab's index (-1: no memory). After it, store() cannot fail."""
    cdef int32_t slab_index = slab_for(t, dim)
    if slab_index < 0:
        slab_index = add_slab(t, dim)
        if slab_index < 0:
            return -1
    if reserve_slots(t, count) != 0:
        return -1
    return slab_index


# --- index --------------------------------------------------------------------------

cdef inline size_t find_cell(const Table *t, const KeyId *k) noexcept nogil:
    """Cell holding key `k`, or the empty cell where probing stopped."""
    cdef uint32_t tag = <uint32_t>k.hash
    cdef size_t i = tag & t.cell_mask
    cdef slot_t slot
    while True:
        slot = t.cells[i].slot
        if slot == NO_SLOT:
            return i
        if t.cells[i].tag == tag and digests_equal(t.entries[slot].digest, k.digest):
            return i
        i = (i + 1) & t.cell_mask


cdef inline slot_t find(const Table *t, const KeyId *k) noexcept nogil:
    return t.cells[find_cell(t, k)].slot


cdef inline void index_delete(Table *t, size_t hole) noexcept nogil:
    """Empty cell `hole`, shifting later cells of its cluster back (no tombstones)."""
    cdef size_t mask = t.cell_mask
    cdef size_t j = hole
    cdef size_t home
    while True:
        j = (j + 1) & mask
        if t.cells[j].slot == NO_SLOT:
            break
        home = t.cells[j].tag & mask
        # the cell at j may move to `hole` unless its home lies in (hole, j]
        if ((j - home) & mask) >= ((j - hole) & mask):
            t.cells[hole] = t.cells[j]
            hole = j
    t.cells[hole].slot = NO_SLOT


# --- the expiry list (write order; with one TTL, expiry order) -----------------------

cdef inline void expiry_unlink(Table *t, slot_t s) noexcept nogil:
    cdef Entry *e = &t.entries[s]
    if e.expiry_prev != NO_SLOT:
        t.entries[e.expiry_prev].expiry_next = e.expiry_next
    else:
        t.expiry_head = e.expiry_next
    if e.expiry_next != NO_SLOT:
        t.entries[e.expiry_next].expiry_prev = e.expiry_prev
    else:
        t.expiry_tail = e.expiry_prev


cdef inline void expiry_push_tail(Table *t, slot_t s) noexcept nogil:
    cdef Entry *e = &t.entries[s]
    e.expiry_next = NO_SLOT
    e.expiry_prev = t.expiry_tail
    if t.expiry_tail != NO_SLOT:
        t.entries[t.expiry_tail].expiry_next = s
    else:
        t.expiry_head = s
    t.expiry_tail = s


# --- entries ------------------------------------------------------------------------

cdef inline bint expired(const Table *t, slot_t s, double now) noexcept nogil:
    return t.ttl_seconds > 0 and t.entries[s].expires_at <= now


cdef inline char *row_of(const Table *t, slot_t s) noexcept nogil:
    return row_at(&t.slabs[t.entries[s].slab], t.entries[s].row)


cdef inline dim_t dim_of(const Table *t, slot_t s) noexcept nogil:
    return t.slabs[t.entries[s].slab].dim


cdef inline size_t cell_of_slot(const Table *t, slot_t s) noexcept nogil:
    """The index cell pointing at live slot `s`. An entry keeps its digest but not
    its hash (64-byte entries have no room), so the hash is computed again (about
    15 instructions, core/keyhash.h): only removals pay for it, never a lookup."""
    cdef uint32_t tag = <uint32_t>digest_hash(t.entries[s].digest)
    cdef size_t i = tag & t.cell_mask
    while t.cells[i].slot != s:
        i = (i + 1) & t.cell_mask
    return i


cdef void discard(Table *t, slot_t s) noexcept nogil:
    """Remove live entry `s` from the index, the policy, the expiry list, its slab
    and the accounting."""
    cdef Entry *e = &t.entries[s]
    cdef Slab *slab = &t.slabs[e.slab]
    index_delete(t, cell_of_slot(t, s))
    policy_on_remove(t, s)
    expiry_unlink(t, s)
    release_row(t, slab, e.row)
    t.used_bytes -= slab_entry_bytes(slab) + t.policy_entry_bytes
    t.size -= 1
    if t.size < t.shrink_mark:
        t.resize_above = -1             # the next put shrinks the table (core/table_shrink.pxi)
    e.recency_next = t.free_slot_head
    t.free_slot_head = s
    trim(t, e.slab)


cdef void probe_lengths(const Table *t, size_t *total, size_t *longest) noexcept nogil:
    """Over live entries: the sum and the maximum of the cells a lookup of each
    visits (1 when it sits in its home cell). For tests of hostile key sets."""
    cdef size_t c, home, n
    total[0] = longest[0] = 0
    for c in range(t.cell_mask + 1):
        if t.cells[c].slot == NO_SLOT:
            continue
        home = t.cells[c].tag & t.cell_mask
        n = ((c - home) & t.cell_mask) + 1
        total[0] += n
        if n > longest[0]:
            longest[0] = n


cdef void make_room(Table *t, Py_ssize_t need, double now) noexcept nogil:
    """Evict (the policy's victims, expired entries first) until one more entry of
    `need` bytes fits both bounds."""
    cdef slot_t victim
    while t.size >= t.max_entries or t.used_bytes + need > t.memory_budget_bytes:
        victim = policy_victim(t, need, now)
        if expired(t, victim, now):
            t.stats.expirations += 1
        else:
            t.stats.evictions += 1
        discard(t, victim)


cdef void purge_expired(Table *t, double now) noexcept nogil:
    if t.ttl_seconds <= 0:
        return
    while t.expiry_head != NO_SLOT and expired(t, t.expiry_head, now):
        t.stats.expirations += 1
        discard(t, t.expiry_head)


cdef slot_t find_live(Table *t, const KeyId *k, double now) noexcept nogil:
    """The live entry of `k`, or NO_SLOT; an expired one is reclaimed on the way."""
    cdef size_t cell = find_cell(t, k)
    cdef slot_t s = t.cells[cell].slot
    if s != NO_SLOT and expired(t, s, now):
        t.stats.expirations += 1
        discard(t, s)
        return NO_SLOT
    return s


cdef void store(Table *t, const KeyId *k, const Source *src, int32_t slab_index,
                double now) noexcept nogil:
    """Store one checked vector (its slab and slots made ready by prepare_put)."""
    cdef Py_ssize_t need = entry_bytes(t.storage, src.n) + t.policy_entry_bytes
    cdef size_t cell = find_cell(t, k)
    cdef slot_t s = t.cells[cell].slot
    cdef Entry *e
    cdef Slab *slab
    cdef row_t row
    cdef int32_t previous

    if s != NO_SLOT:
        if expired(t, s, now):
            t.stats.expirations += 1
        else:
            t.stats.overwrites += 1
        if t.entries[s].slab == slab_index:
            # same key, same dimension: rewrite the row in place
            write_row(t, slab_index, row_of(t, s), src)
            t.entries[s].expires_at = now + t.ttl_seconds if t.ttl_seconds > 0 else INFINITY
            policy_on_hit(t, s)
            expiry_unlink(t, s)
            expiry_push_tail(t, s)
            t.stats.puts += 1
            return
        # same key, new dimension (only when dim is not fixed): the old vector goes
        discard(t, s)
    elif not policy_admit(t, k, need, now):
        return
    make_room(t, need, now)

    # take a slot and a row; prepare_put and make_room guarantee both exist
    s = t.free_slot_head
    t.free_slot_head = t.entries[s].recency_next
    slab = &t.slabs[slab_index]
    row = take_row(t, slab_index, s)
    if t.last_slab != slab_index:
        previous = t.last_slab
        t.last_slab = slab_index
        if previous >= 0:
            trim(t, previous)

    e = &t.entries[s]
    memcpy(e.digest, k.digest, sizeof(e.digest))
    e.expires_at = now + t.ttl_seconds if t.ttl_seconds > 0 else INFINITY
    e.slab = slab_index
    e.row = row
    write_row(t, slab_index, row_at(slab, row), src)
    policy_on_insert(t, s, k)
    expiry_push_tail(t, s)
    # cells may have shifted while room was made: probe again for a free cell
    cell = find_cell(t, k)
    t.cells[cell].tag = <uint32_t>k.hash
    t.cells[cell].slot = s
    t.size += 1
    t.used_bytes += need
    t.stats.puts += 1


cdef void store_rows(Table *t, PyObject **keys, const Source *first, Py_ssize_t n,
                     Py_ssize_t row_stride, int32_t slab_index, double now) noexcept nogil:
    """A batch's loop: row i of a strided matrix under key i, in order."""
    cdef Source src = first[0]
    cdef Py_ssize_t i
    for i in range(n):
        src.data = first.data + i * row_stride
        store(t, key_ident(keys[i]), &src, slab_index, now)


cdef dim_t batch_dim(const Table *t, PyObject **keys, Py_ssize_t n, double now,
                     dim_t *named, int *n_dims) noexcept nogil:
    """A batch lookup's first pass, which changes nothing: the dimension shared by
    the live entries of `keys` (0 when none is live). The distinct dimensions
    found go to `named` (the first NAMED_DIMS of them) and their count to n_dims
    (counting stops past NAMED_DIMS: the error then says "more than"). A fixed-dim
    table answers 0 with no dimension found (its dim decides) without a lookup; a
    table whose live entries all share one slab stops at the first live key."""
    cdef Py_ssize_t i
    cdef slot_t s
    cdef dim_t d
    cdef int j
    cdef int32_t in_use = 0
    n_dims[0] = 0
    if t.dim:
        return 0    # every entry has the fixed dim
    for j in range(t.n_slabs):
        in_use += t.slabs[j].used > 0
    if in_use == 0:
        return 0    # no entries at all
    for i in range(n):
        s = find(t, key_ident(keys[i]))
        if s == NO_SLOT or expired(t, s, now):
            continue
        d = dim_of(t, s)
        if in_use == 1:
            # one dimension holds every live entry: the first live key names it
            named[0] = d
            n_dims[0] = 1
            break
        for j in range(n_dims[0]):
            if named[j] == d:
                break
        else:
            if n_dims[0] == NAMED_DIMS:
                n_dims[0] += 1
                break
            named[n_dims[0]] = d
            n_dims[0] += 1
    return named[0] if n_dims[0] else 0


cdef void copy_out_rows(Table *t, PyObject **keys, Py_ssize_t n, float32_t *matrix, dim_t dim,
                        cnp.npy_bool *found, double now) noexcept nogil:
    """A batch lookup's copy: hits of dimension `dim` into `matrix`, zeros for
    the rest. An entry of another dimension (changed since the batch's dim was
    decided) reads as a miss."""
    cdef Py_ssize_t i
    cdef slot_t s
    cdef int storage = t.storage        # a local: the loop's test of it hoisted
    # A look-ahead that changes nothing: every key's index cell and entry, then
    # a load of its row's first 256 bytes started, so that these trips from
    # memory overlap one another (the loop runs ahead of the loads it waits
    # for) instead of each waiting for the row copy before it, and the copy
    # finds each row begun (a table with one dimension in use decides a batch's
    # dim without this pass: batch_dim). Prefetching the entry alone, as this
    # pass did before, measured 0.27 of the fastest peer per row of a
    # 1,000-key get_many; this, 0.23-0.24 (tools/goal_table.py, six runs each);
    # 512 bytes, or each whole row three keys ahead in the copy loop, no better.
    for i in range(n):
        s = find(t, key_ident(keys[i]))
        if s != NO_SLOT:
            embcache_prefetch(row_of(t, s), 256)
    for i in range(n):
        copy_out_row(t, keys[i], matrix + <size_t>i * <size_t>dim, dim, &found[i], now, storage)


cdef inline void copy_out_row(Table *t, PyObject *key, float32_t *dst, dim_t dim,
                              cnp.npy_bool *found, double now, int storage) noexcept nogil:
    """One key of a batch lookup: its row into `dst` if live and of `dim`, else zeros."""
    cdef slot_t s = find_live(t, key_ident(key), now)
    if s == NO_SLOT or dim_of(t, s) != dim:
        t.stats.misses += 1
        policy_on_miss(t, key_ident(key))
        found[0] = 0
        memset(dst, 0, <size_t>dim * 4)
        return
    t.stats.hits += 1
    found[0] = 1
    if storage == EMBCACHE_STORE_F32:
        memcpy(dst, row_of(t, s), <size_t>dim * 4)
    else:
        embcache_decode_row(storage, row_of(t, s), <size_t>dim, dst)
    policy_on_hit(t, s)


cdef void clear_table(Table *t) noexcept nogil:
    """Forget every entry. A fixed-dim table keeps its slab's written pages for
    refilling (still counted as resident); otherwise slabs go back to the OS and
    the tables shrink to their first size."""
    cdef slot_t i
    memset(t.cells, 0xff, (t.cell_mask + 1) * sizeof(Cell))
    t.free_slot_head = NO_SLOT
    for i in range(t.entry_capacity - 1, -1, -1):
        t.entries[i].recency_next = t.free_slot_head
        t.free_slot_head = i
    t.recency_head = t.recency_tail = NO_SLOT
    t.expiry_head = t.expiry_tail = NO_SLOT
    t.size = 0
    t.used_bytes = t.policy_fixed_bytes
    t.resize_above = t.entry_capacity       # a kept table is kept for refilling
    t.shrink_mark = 0
    policy_clear(t)
    if t.dim:
        t.slabs[0].used = 0
        t.slabs[0].hole = NO_ROW
    else:
        release_slabs(t)
        embcache_table_free(t.entries, <size_t>t.entry_capacity * sizeof(Entry))
        t.entries = NULL
        t.entry_capacity = 0
        t.resize_above = 0
        t.free_slot_head = NO_SLOT
        # shrinking cannot fail for want of memory that matters: keep the old
        # index if even MIN_INDEX_CELLS cannot be had
        if resize_index(t, MIN_INDEX_CELLS) != 0:
            memset(t.cells, 0xff, (t.cell_mask + 1) * sizeof(Cell))
