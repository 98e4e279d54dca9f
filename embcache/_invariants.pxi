# The invariant walker: checks every structure of a Table against the others.
#
# Owns: check_table (called by SyncEmbeddingCache._check_invariants, for tests and
# debugging; O(capacity), with Python objects, under the cache lock) and the
# invariants listed at the top of _core.pyx. The policy walks its own links
# (check_policy in _policy.pxi).

# state of each slot during the walk
DEF UNSEEN = 0
DEF ON_POLICY = 1       # reached through the policy's links
DEF FREE = 2            # on the free-slot chain
DEF LIVE = 3            # reached through the policy's links and the expiry list


cdef inline int require(bint condition, message) except -1:
    if not condition:
        raise AssertionError(message)
    return 0


cdef int check_table(const Table *t) except -1:
    cdef slot_t s, prev, n
    cdef size_t c, home, k
    cdef Py_ssize_t used = 0
    cdef int32_t i
    cdef const Entry *e
    cdef const Slab *slab
    cdef KeyId key
    cdef slot_t cap = t.entry_capacity
    state = bytearray(cap)
    check_policy(t, state)
    # expiry list: the same entries, in non-decreasing expiry order
    n = 0
    prev = NO_SLOT
    s = t.expiry_head
    while s != NO_SLOT:
        require(0 <= s < cap and state[s] == ON_POLICY,
                f"expiry list holds slot {s} that the policy does not")
        require(t.entries[s].expiry_prev == prev, f"slot {s}: expiry_prev broken")
        if prev != NO_SLOT:
            require(t.entries[prev].expires_at <= t.entries[s].expires_at,
                    "expiry list is not in expiry order")
        state[s] = LIVE
        n += 1
        prev = s
        s = t.entries[s].expiry_next
    require(t.expiry_tail == prev, "expiry_tail is not the last slot of the list")
    require(n == t.size, f"expiry list holds {n} entries, size is {t.size}")
    # free slots
    s = t.free_slot_head
    n = 0
    while s != NO_SLOT:
        require(0 <= s < cap and state[s] == UNSEEN,
                f"free-slot chain holds slot {s} that is live or repeated")
        state[s] = FREE
        n += 1
        s = t.entries[s].recency_next
    require(n + t.size == cap, f"{n} free + {t.size} live slots != capacity {cap}")
    # index
    n = 0
    for c in range(t.cell_mask + 1):
        s = t.cells[c].slot
        if s == NO_SLOT:
            continue
        n += 1
        require(0 <= s < cap and state[s] == LIVE, f"index cell {c} points at slot {s} that is not live")
        require(t.cells[c].tag == <uint32_t>digest_hash(t.entries[s].digest),
                f"index cell {c}: tag is not the hash of slot {s}'s digest")
        home = t.cells[c].tag & t.cell_mask
        k = home
        while k != c:
            require(t.cells[k].slot != NO_SLOT, f"index cell {c} unreachable from its home {home}")
            k = (k + 1) & t.cell_mask
    require(n == t.size, f"index holds {n} cells, size is {t.size}")
    require(2 * <size_t>cap <= t.cell_mask + 1, "index has fewer than 2 cells per entry slot")
    require((<size_t>t.entries) % ENTRY_ALIGN == 0, "entry table is not 64-byte aligned")
    # slabs: rows used by live entries, the free-row chains, accounting
    rows_used = [set() for _ in range(t.n_slabs)]
    for s in range(cap):
        if state[s] != LIVE:
            continue
        e = &t.entries[s]
        require(0 <= e.slab < t.n_slabs, f"slot {s} names slab {e.slab}")
        require(0 <= e.row < t.slabs[e.slab].high_water, f"slot {s} names row {e.row} past high water")
        require(e.row not in rows_used[e.slab], f"row {e.row} of slab {e.slab} used twice")
        rows_used[e.slab].add(e.row)
        used += entry_bytes(t.slabs[e.slab].dim)
        memcpy(key.digest, e.digest, sizeof(key.digest))
        key.hash = digest_hash(e.digest)
        require(find(t, &key) == s, f"slot {s} is not found by its digest")
    entry_limit = 0
    for i in range(t.n_slabs):
        slab = &t.slabs[i]
        require(slab.used == len(rows_used[i]), f"slab {i}: used {slab.used} != {len(rows_used[i])} live rows")
        require(slab.high_water <= slab.capacity, f"slab {i}: high water past capacity")
        free_rows = set()
        r = slab.free_row_head
        while r != NO_ROW:
            require(0 <= r < slab.high_water and r not in free_rows and r not in rows_used[i],
                    f"slab {i}: free-row chain is broken at row {r}")
            free_rows.add(r)
            r = (<row_t *>(slab.rows + <size_t>r * <size_t>slab.dim))[0]
        require(len(free_rows) + slab.used == slab.high_water,
                f"slab {i}: {len(free_rows)} free + {slab.used} used rows != high water {slab.high_water}")
        entry_limit += slab.capacity
    require(used == t.used_bytes, f"accounted {t.used_bytes} bytes, entries hold {used}")
    require(t.used_bytes <= t.memory_budget_bytes, "memory accounting exceeds the budget")
    require(t.size <= t.max_entries, "more entries than max_entries")
    require(t.entry_limit == min(entry_limit, t.max_entries), "entry_limit is stale")
    require(t.entry_capacity <= t.entry_limit, "entry table larger than its limit")
    return 0
