# The policy seam: every recency and eviction decision of the table.
#
# Owns: the entries' policy links (recency_prev / recency_next, the list heads
# of the Table) and the hooks the table calls:
#
#   policy_on_hit(t, s)          a lookup found s, or a put rewrote it
#   policy_on_insert(t, s)       s was just stored
#   policy_on_remove(t, s)       s is leaving the table (evicted, expired, removed)
#   policy_on_miss(t, k)         a lookup of key k found nothing
#   policy_victim(t, now)        the entry to evict next (the table is not empty)
#   policy_admit(t, k, need, now)  whether a new key may displace entries at all
#
# Today's policy, POLICY_LRU: one recency list (head = most recent); the victim
# is the oldest write if it has expired, else the least recently used entry;
# every candidate is admitted. A second policy adds its state to Table, its
# case to each hook and its walk to check_policy: the public methods and the
# batch loops never change. Each hook is inline and, with one policy, compiles
# to exactly the list operations the table did before the seam existed.



cdef inline void recency_unlink(Table *t, slot_t s) noexcept nogil:
    cdef Entry *e = &t.entries[s]
    if e.recency_prev != NO_SLOT:
        t.entries[e.recency_prev].recency_next = e.recency_next
    else:
        t.recency_head = e.recency_next
    if e.recency_next != NO_SLOT:
        t.entries[e.recency_next].recency_prev = e.recency_prev
    else:
        t.recency_tail = e.recency_prev


cdef inline void recency_push_head(Table *t, slot_t s) noexcept nogil:
    cdef Entry *e = &t.entries[s]
    e.recency_prev = NO_SLOT
    e.recency_next = t.recency_head
    if t.recency_head != NO_SLOT:
        t.entries[t.recency_head].recency_prev = s
    else:
        t.recency_tail = s
    t.recency_head = s


cdef inline void policy_on_hit(Table *t, slot_t s) noexcept nogil:
    if t.recency_head != s:
        recency_unlink(t, s)
        recency_push_head(t, s)


cdef inline void policy_on_insert(Table *t, slot_t s) noexcept nogil:
    recency_push_head(t, s)


cdef inline void policy_on_remove(Table *t, slot_t s) noexcept nogil:
    recency_unlink(t, s)


cdef inline void policy_on_miss(Table *t, const KeyId *k) noexcept nogil:
    pass


cdef inline slot_t policy_victim(Table *t, double now) noexcept nogil:
    if t.expiry_head != NO_SLOT and expired(t, t.expiry_head, now):
        return t.expiry_head
    return t.recency_tail


cdef inline bint policy_admit(Table *t, const KeyId *k, Py_ssize_t need,
                              double now) noexcept nogil:
    return True


cdef int check_policy(const Table *t, unsigned char *state, Violation *v) noexcept nogil:
    """The policy's part of the invariant walk (_invariants.pxi): every live slot
    on the recency list exactly once, links consistent. Marks each live slot
    ON_POLICY in `state`; 1 with `v` set when something is broken."""
    cdef slot_t s = t.recency_head
    cdef slot_t prev = NO_SLOT
    cdef slot_t n = 0
    cdef slot_t cap = t.entry_capacity
    while s != NO_SLOT:
        if not 0 <= s < cap:
            return fail(v, 1, s, cap)
        if state[s] != UNSEEN:
            return fail(v, 2, s)
        if t.entries[s].recency_prev != prev:
            return fail(v, 3, s)
        state[s] = ON_POLICY
        n += 1
        prev = s
        s = t.entries[s].recency_next
    if t.recency_tail != prev:
        return fail(v, 4)
    if n != t.size:
        return fail(v, 5, n, t.size)
    return 0
