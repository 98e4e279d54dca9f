# The invariant walker: checks every structure of a Table against the others.
#
# Owns: check_table (called by SyncEmbeddingCache._check_invariants, for tests and
# debugging; O(capacity)) and the invariants listed at the top of _core.pyx. The
# walk runs under the cache lock in C only (scratch memory from malloc, no Python
# object, so no garbage collection can re-enter the cache); the first broken
# invariant is recorded as a Violation and its message built after the lock is
# dropped. The policy walks its own links (check_policy in core/policy.pxi).

# state of each slot during the walk
DEF UNSEEN = 0
DEF ON_POLICY = 1       # reached through the policy's links
DEF FREE = 2            # on the free-slot chain
DEF LIVE = 3            # reached through the policy's links and the expiry list
# state of each slab row
DEF ROW_UNSEEN = 0
DEF ROW_USED = 1


cdef struct Violation:
    int code                    # 0: none; else one of the messages in VIOLATIONS
    long long a, b, c


# code -> message, with {a} {b} {c} from the Violation
cdef dict VIOLATIONS = {
    1: "recency list reaches slot {a} outside [0, {b})",
    2: "recency list visits slot {a} twice",
    3: "slot {a}: recency_prev broken",
    4: "recency_tail is not the last slot of the list",
    5: "recency list holds {a} entries, size is {b}",
    6: "expiry list holds slot {a} that the policy does not",
    7: "slot {a}: expiry_prev broken",
    8: "expiry list is not in expiry order (at slot {a})",
    9: "expiry_tail is not the last slot of the list",
    10: "expiry list holds {a} entries, size is {b}",
    11: "free-slot chain holds slot {a} that is live or repeated",
    12: "{a} free + {b} live slots != capacity {c}",
    13: "index cell {a} points at slot {b} that is not live",
    14: "index cell {a}: tag is not the hash of slot {b}'s digest",
    15: "index cell {a} unreachable from its home {b}",
    16: "index holds {a} cells, size is {b}",
    17: "index has fewer than 2 cells per entry slot",
    18: "entry table is not 64-byte aligned",
    19: "slot {a} names slab {b}",
    20: "slot {a} names row {b}, not a live row of its slab",
    21: "row {b} of slab {a} used twice",
    22: "slot {a} is not found by its digest",
    23: "slab {a}: used {b} != {c} live rows",
    24: "slab {a}: used {b} / written {c} rows out of order or past capacity",
    25: "slab {a}: hole {b} is not a free row below the last",
    26: "slab {a}: row {b} does not name its owner slot {c}",
    27: "accounted {a} bytes, entries hold {b}",
    28: "memory accounting exceeds the budget",
    29: "more entries than max_entries",
    30: "entry_limit is stale",
    31: "entry table larger than its limit",
    32: "no memory for the invariant walk",
    33: "slab {a} (dim {b}) is not found by its dimension",
    34: "slot {a} is tagged segment {b} but sits on segment {c}",
    35: "slot {a}: the policy's key bits are not its digest's hash",
    36: "segment {a} holds {b} entries, its size says {c}",
    37: "W-TinyLFU table has entries on the LRU recency list",
    38: "window share {a} outside [1, capacity - 1]",
    39: "window ({a}) or protected ({b}) segment over its share",
    40: "protected share {a} is not 80% of the main region",
    41: "frequency sketch is malformed (size, halving count or accounting)",
    42: "huge frontier names slab {a} of {b}",
    43: "slab {a}: a stride of {b} bytes is not the storage's row bytes and the owner slot",
}


cdef inline int fail(Violation *v, int code, long long a=0, long long b=0,
                     long long c=0) noexcept nogil:
    v.code = code
    v.a = a
    v.b = b
    v.c = c
    return 1


cdef int check_lists(const Table *t, unsigned char *state, Violation *v) noexcept nogil:
    """Policy links, expiry list and free-slot chain; marks each slot's state."""
    cdef slot_t s, prev, n
    cdef slot_t cap = t.entry_capacity
    if check_policy(t, state, v):
        return 1
    n = 0
    prev = NO_SLOT
    s = t.expiry_head
    while s != NO_SLOT:
        if not (0 <= s < cap and state[s] == ON_POLICY):
            return fail(v, 6, s)
        if t.entries[s].expiry_prev != prev:
            return fail(v, 7, s)
        if prev != NO_SLOT and t.entries[prev].expires_at > t.entries[s].expires_at:
            return fail(v, 8, s)
        state[s] = LIVE
        n += 1
        prev = s
        s = t.entries[s].expiry_next
    if t.expiry_tail != prev:
        return fail(v, 9)
    if n != t.size:
        return fail(v, 10, n, t.size)
    n = 0
    s = t.free_slot_head
    while s != NO_SLOT:
        if not (0 <= s < cap and state[s] == UNSEEN):
            return fail(v, 11, s)
        state[s] = FREE
        n += 1
        s = t.entries[s].recency_next
    if n + t.size != cap:
        return fail(v, 12, n, t.size, cap)
    return 0


cdef int check_index(const Table *t, const unsigned char *state, Violation *v) noexcept nogil:
    cdef size_t c, home, k
    cdef slot_t s, n = 0
    for c in range(t.cell_mask + 1):
        s = t.cells[c].slot
        if s == NO_SLOT:
            continue
        n += 1
        if not (0 <= s < t.entry_capacity and state[s] == LIVE):
            return fail(v, 13, <long long>c, s)
        if t.cells[c].tag != <uint32_t>digest_hash(t.entries[s].digest):
            return fail(v, 14, <long long>c, s)
        home = t.cells[c].tag & t.cell_mask
        k = home
        while k != c:
            if t.cells[k].slot == NO_SLOT:
                return fail(v, 15, <long long>c, <long long>home)
            k = (k + 1) & t.cell_mask
    if n != t.size:
        return fail(v, 16, n, t.size)
    if 2 * <size_t>t.entry_capacity > t.cell_mask + 1:
        return fail(v, 17)
    if (<size_t>t.entries) % ENTRY_ALIGN != 0:
        return fail(v, 18)
    return 0


cdef int check_slabs(const Table *t, const unsigned char *state, unsigned char *rows,
                     const size_t *first_row, Violation *v) noexcept nogil:
    """Rows of live entries, dense slabs and the accounting. `rows` holds one state
    byte per row below each slab's `used`, slab i's from first_row[i]."""
    cdef slot_t s
    cdef int32_t i
    cdef row_t r
    cdef Py_ssize_t used = 0, n_used
    cdef Py_ssize_t entry_limit = 0
    cdef const Entry *e
    cdef const Slab *slab
    cdef KeyId key
    for s in range(t.entry_capacity):
        if state[s] != LIVE:
            continue
        e = &t.entries[s]
        if not 0 <= e.slab < t.n_slabs:
            return fail(v, 19, s, e.slab)
        slab = &t.slabs[e.slab]
        if not 0 <= e.row < slab.used or e.row == slab.hole:
            return fail(v, 20, s, e.row)
        if rows[first_row[e.slab] + e.row] != ROW_UNSEEN:
            return fail(v, 21, e.slab, e.row)
        rows[first_row[e.slab] + e.row] = ROW_USED
        if owner_at(slab, e.row) != s:
            return fail(v, 26, e.slab, e.row, s)
        used += entry_bytes(t.storage, slab.dim) + t.policy_entry_bytes
        memcpy(key.digest, e.digest, sizeof(key.digest))
        key.hash = digest_hash(e.digest)
        if find(t, &key) != s:
            return fail(v, 22, s)
    for i in range(t.n_slabs):
        slab = &t.slabs[i]
        if not 0 <= slab.used <= slab.written <= slab.capacity:
            return fail(v, 24, i, slab.used, slab.written)
        if slab.hole != NO_ROW and not (0 <= slab.hole < slab.used - 1
                                        and rows[first_row[i] + slab.hole] == ROW_UNSEEN):
            return fail(v, 25, i, slab.hole)
        n_used = 0
        for r in range(slab.used):
            n_used += rows[first_row[i] + r] == ROW_USED
        if n_used != slab.used - (slab.hole != NO_ROW):
            return fail(v, 23, i, slab.used - (slab.hole != NO_ROW), n_used)
        if slab.stride != embcache_row_bytes(t.storage, <size_t>slab.dim) + sizeof(slot_t):
            return fail(v, 43, i, <long long>slab.stride)
        if slab_for(t, slab.dim) != i:
            return fail(v, 33, i, slab.dim)
        entry_limit += slab.capacity
    if not -1 <= t.huge_slab < t.n_slabs or (t.dim and t.huge_slab != -1):
        return fail(v, 42, t.huge_slab, t.n_slabs)
    used += t.policy_fixed_bytes
    if used != t.used_bytes:
        return fail(v, 27, t.used_bytes, used)
    if t.used_bytes > t.memory_budget_bytes:
        return fail(v, 28)
    if t.size > t.max_entries:
        return fail(v, 29)
    if t.entry_limit != min(entry_limit, <Py_ssize_t>t.max_entries):
        return fail(v, 30)
    if t.entry_capacity > t.entry_limit:
        return fail(v, 31)
    return 0


cdef int check_table(const Table *t, Violation *v) noexcept nogil:
    """Walk every structure; 0 when all invariants hold, else 1 with `v` set."""
    cdef unsigned char *state = <unsigned char *>calloc(<size_t>t.entry_capacity + 1, 1)
    cdef size_t *first_row = <size_t *>malloc((<size_t>t.n_slabs + 1) * sizeof(size_t))
    cdef unsigned char *rows = NULL
    cdef size_t total = 0
    cdef int32_t i
    cdef int broken
    if state != NULL and first_row != NULL:
        for i in range(t.n_slabs):
            first_row[i] = total
            total += <size_t>t.slabs[i].used
        rows = <unsigned char *>calloc(total + 1, 1)
    if state == NULL or first_row == NULL or rows == NULL:
        broken = fail(v, 32)
    else:
        broken = (check_lists(t, state, v) or check_index(t, state, v)
                  or check_slabs(t, state, rows, first_row, v))
    free(state)
    free(first_row)
    free(rows)
    return broken
