# The policy seam: every recency and eviction decision of the table.
#
# Owns: the entries' policy links (recency_prev / recency_next, the list heads
# of the Table), the policy's own Table fields and the hooks the table calls:
#
#   policy_on_hit(t, s)             a lookup found s, or a put rewrote it
#   policy_on_insert(t, s, k)       s (key k) was just stored
#   policy_on_remove(t, s)          s is leaving the table (evicted, expired, removed)
#   policy_on_miss(t, k)            a lookup of key k found nothing
#   policy_victim(t, need, now)     the entry to evict next (the table is not empty;
#                                   a new entry of `need` bytes is waiting)
#   policy_admit(t, k, need, now)   whether a new key may displace entries at all
#   policy_reserve / policy_clear   the entry table grew / was cleared
#
# POLICY_LRU: one recency list (head = most recent); the victim is the oldest
# write if it has expired, else the least recently used entry; every candidate
# is admitted. Each hook is inline and compiles to the list operations the table
# did before the seam existed, behind one branch on t.policy.
#
# POLICY_TINYLFU (W-TinyLFU, Einziger, Friedman & Manes, arXiv 1512.00727, as
# Caffeine arranges it): the recency links carry three LRU lists, the segments
#
#     WINDOW     new entries, in LRU order; its share is window_max entries
#     PROBATION  the main region's entries not (yet) hit there
#     PROTECTED  main-region entries hit while on probation; protected_max entries
#
# and the count-min sketch (core/sketch.pxi) estimates each key's recent accesses
# (every lookup, hit or miss, and every overwrite counts one). Which segment a
# slot is in and 30 bits of its key's hash (for the sketch) live in
# policy_slots[s] (4 bytes per entry slot, accounted per entry: the 64-byte
# Entry has no spare byte). A new key always enters the window; the window's
# overflow goes to the head of probation. When the cache is full and the window
# is at its share, the window's oldest entry is the candidate: it keeps its place
# (and moves to probation on the next insert) only if its frequency beats every
# entry of the main region's LRU end that would have to go to make room for the
# new entry (probation's oldest first, then protected's); otherwise the candidate
# itself is evicted and counted in admission_rejections. A put therefore never
# fails and never raises because of admission. Expired entries still go first.
# The window's share moves by hill climbing on the hit rate of each sample of
# 10 x capacity accesses (Caffeine's climber: keep the direction while the hit
# rate improves, reverse it when it falls, restart the step at 6.25% of the
# capacity after a change of 5 points or more, else decay it by 0.98).

DEF WINDOW = 0
DEF PROBATION = 1
DEF PROTECTED = 2
DEF SEGMENT_MASK = 3
DEF POLICY_SLOT_BYTES = 4           # policy_slots[s]: key bits << 2 | segment
DEF CLIMB_RESTART = 0.05
DEF CLIMB_STEP = 0.0625
DEF CLIMB_DECAY = 0.98

include "sketch.pxi"


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


# --- W-TinyLFU's segments (three LRU lists over the same links) -----------------------

cdef inline int segment_of(const Table *t, slot_t s) noexcept nogil:
    return <int>(t.policy_slots[s] & SEGMENT_MASK)


cdef inline uint32_t slot_bits(const Table *t, slot_t s) noexcept nogil:
    return t.policy_slots[s] >> 2


cdef inline uint32_t key_bits(const KeyId *k) noexcept nogil:
    return (<uint32_t>k.hash) >> 2


cdef inline void segment_unlink(Table *t, int seg, slot_t s) noexcept nogil:
    cdef Entry *e = &t.entries[s]
    if e.recency_prev != NO_SLOT:
        t.entries[e.recency_prev].recency_next = e.recency_next
    else:
        t.segment_head[seg] = e.recency_next
    if e.recency_next != NO_SLOT:
        t.entries[e.recency_next].recency_prev = e.recency_prev
    else:
        t.segment_tail[seg] = e.recency_prev
    t.segment_size[seg] -= 1


cdef inline void segment_push_head(Table *t, int seg, slot_t s) noexcept nogil:
    cdef Entry *e = &t.entries[s]
    e.recency_prev = NO_SLOT
    e.recency_next = t.segment_head[seg]
    if t.segment_head[seg] != NO_SLOT:
        t.entries[t.segment_head[seg]].recency_prev = s
    else:
        t.segment_tail[seg] = s
    t.segment_head[seg] = s
    t.segment_size[seg] += 1
    t.policy_slots[s] = (t.policy_slots[s] & ~(<uint32_t>SEGMENT_MASK)) | <uint32_t>seg


cdef inline void segment_move(Table *t, int seg_from, int seg_to, slot_t s) noexcept nogil:
    segment_unlink(t, seg_from, s)
    segment_push_head(t, seg_to, s)


cdef void rebalance(Table *t) noexcept nogil:
    """Bring the window and the protected segment back within their shares; what
    leaves them goes to the head of probation."""
    while t.segment_size[PROTECTED] > t.protected_max:
        segment_move(t, PROTECTED, PROBATION, t.segment_tail[PROTECTED])
    while t.segment_size[WINDOW] > t.window_max:
        segment_move(t, WINDOW, PROBATION, t.segment_tail[WINDOW])


cdef inline slot_t initial_window(slot_t capacity) noexcept nogil:
    return max(<slot_t>1, capacity // 100)


cdef void set_window(Table *t, slot_t window_max) noexcept nogil:
    """The window's share; the main region gets the rest, 80% of it protected."""
    t.window_max = min(max(window_max, <slot_t>1), max(<slot_t>1, t.policy_capacity - 1))
    t.protected_max = <slot_t>((<Py_ssize_t>(t.policy_capacity - t.window_max) * 4) // 5)
    if t.protected_max < 0:
        t.protected_max = 0


cdef void climb(Table *t) noexcept nogil:
    """At the end of each sample, move the window's share by the hill climber."""
    cdef unsigned long long sample = t.climb_hits + t.climb_misses
    cdef double rate, change, amount
    if sample < t.sketch_period:
        return
    rate = <double>t.climb_hits / <double>sample
    change = rate - t.climb_previous_rate
    amount = t.climb_step if change >= 0 else -t.climb_step
    if fabs(change) >= CLIMB_RESTART:
        t.climb_step = CLIMB_STEP * <double>t.policy_capacity * (1.0 if amount >= 0 else -1.0)
    else:
        t.climb_step = CLIMB_DECAY * amount
    t.climb_previous_rate = rate
    t.climb_hits = 0
    t.climb_misses = 0
    set_window(t, <slot_t>(<Py_ssize_t>t.window_max + <Py_ssize_t>amount))
    rebalance(t)


cdef inline void tinylfu_hit(Table *t, slot_t s) noexcept nogil:
    cdef int seg = segment_of(t, s)
    sketch_increment(t, slot_bits(t, s))
    if seg == PROBATION:
        segment_move(t, PROBATION, PROTECTED, s)
        if t.segment_size[PROTECTED] > t.protected_max:
            segment_move(t, PROTECTED, PROBATION, t.segment_tail[PROTECTED])
    elif t.segment_head[seg] != s:
        segment_move(t, seg, seg, s)
    t.climb_hits += 1
    climb(t)


cdef slot_t main_lru(const Table *t) noexcept nogil:
    """Plain eviction order: probation's oldest, then protected's, then the window's."""
    if t.segment_tail[PROBATION] != NO_SLOT:
        return t.segment_tail[PROBATION]
    if t.segment_tail[PROTECTED] != NO_SLOT:
        return t.segment_tail[PROTECTED]
    return t.segment_tail[WINDOW]


cdef slot_t tinylfu_victim(Table *t, Py_ssize_t need) noexcept nogil:
    """The window's oldest entry against the main-region entries it would displace."""
    cdef slot_t candidate = t.segment_tail[WINDOW]
    cdef Py_ssize_t count_short, bytes_short
    cdef int wanted, seg = PROBATION
    cdef slot_t v, first = NO_SLOT
    if candidate == NO_SLOT or t.segment_size[WINDOW] < t.window_max:
        return main_lru(t)
    # what must go, with the candidate staying, for the new entry to fit
    count_short = <Py_ssize_t>t.size + 1 - <Py_ssize_t>t.max_entries
    bytes_short = t.used_bytes + need - t.memory_budget_bytes
    wanted = sketch_frequency(t, slot_bits(t, candidate))
    v = t.segment_tail[PROBATION]
    while count_short > 0 or bytes_short > 0:
        if v == NO_SLOT:
            if seg == PROTECTED:
                return candidate    # the main region cannot make room: not a rejection
            seg = PROTECTED
            v = t.segment_tail[PROTECTED]
            continue
        if sketch_frequency(t, slot_bits(t, v)) >= wanted:
            t.admission_rejections += 1
            return candidate
        if first == NO_SLOT:
            first = v
        count_short -= 1
        bytes_short -= slab_entry_bytes(&t.slabs[t.entries[v].slab]) + t.policy_entry_bytes
        v = t.entries[v].recency_prev
    return first


# --- the hooks ----------------------------------------------------------------------

cdef inline void policy_on_hit(Table *t, slot_t s) noexcept nogil:
    if t.policy == POLICY_LRU:
        if t.recency_head != s:
            recency_unlink(t, s)
            recency_push_head(t, s)
    else:
        tinylfu_hit(t, s)


cdef inline void policy_on_insert(Table *t, slot_t s, const KeyId *k) noexcept nogil:
    if t.policy == POLICY_LRU:
        recency_push_head(t, s)
    else:
        t.policy_slots[s] = key_bits(k) << 2
        segment_push_head(t, WINDOW, s)
        if t.segment_size[WINDOW] > t.window_max:
            segment_move(t, WINDOW, PROBATION, t.segment_tail[WINDOW])


cdef inline void policy_on_remove(Table *t, slot_t s) noexcept nogil:
    if t.policy == POLICY_LRU:
        recency_unlink(t, s)
    else:
        segment_unlink(t, segment_of(t, s), s)


cdef void policy_on_move(Table *t, slot_t s, slot_t d) noexcept nogil:
    """Live entry `s` now sits in slot `d` (its Entry copied there, links as they
    were; the table is shrinking): its neighbours, list ends and policy slot
    follow it. Order, segments and the sketch are unchanged."""
    cdef Entry *e = &t.entries[d]
    cdef slot_t *head = &t.recency_head
    cdef slot_t *tail = &t.recency_tail
    cdef int seg
    if t.policy != POLICY_LRU:
        seg = segment_of(t, s)
        head = &t.segment_head[seg]
        tail = &t.segment_tail[seg]
        t.policy_slots[d] = t.policy_slots[s]
    if e.recency_prev != NO_SLOT:
        t.entries[e.recency_prev].recency_next = d
    else:
        head[0] = d
    if e.recency_next != NO_SLOT:
        t.entries[e.recency_next].recency_prev = d
    else:
        tail[0] = d


cdef inline void policy_on_miss(Table *t, const KeyId *k) noexcept nogil:
    if t.policy != POLICY_LRU:
        sketch_increment(t, key_bits(k))
        t.climb_misses += 1
        climb(t)


cdef inline slot_t policy_victim(Table *t, Py_ssize_t need, double now) noexcept nogil:
    if t.expiry_head != NO_SLOT and expired(t, t.expiry_head, now):
        return t.expiry_head
    if t.policy == POLICY_LRU:
        return t.recency_tail
    return tinylfu_victim(t, need)


# --- the order entries would go in (for snapshots) -------------------------------------
# LRU: oldest to newest. W-TinyLFU: probation, then protected, then the window, each
# oldest to newest, so that refilling a cache in this order puts the hottest last.

cdef inline slot_t segment_tail_from(const Table *t, int k) noexcept nogil:
    """The oldest entry of the first non-empty segment from the k-th in walk order
    (probation, protected, window)."""
    cdef slot_t s
    while k < 3:
        s = t.segment_tail[(k + 1) % 3]
        if s != NO_SLOT:
            return s
        k += 1
    return NO_SLOT


cdef inline slot_t policy_walk_first(const Table *t) noexcept nogil:
    if t.policy == POLICY_LRU:
        return t.recency_tail
    return segment_tail_from(t, 0)


cdef inline slot_t policy_walk_next(const Table *t, slot_t s) noexcept nogil:
    cdef slot_t newer = t.entries[s].recency_prev
    if newer != NO_SLOT or t.policy == POLICY_LRU:
        return newer
    return segment_tail_from(t, (segment_of(t, s) + 2) % 3 + 1)


cdef inline bint policy_admit(Table *t, const KeyId *k, Py_ssize_t need,
                              double now) noexcept nogil:
    # W-TinyLFU admits every new key to its window; the candidate for the main
    # region is chosen and judged in policy_victim.
    return True


# --- setup, growth, clear -----------------------------------------------------------

cdef void policy_reset(Table *t) noexcept nogil:
    """Empty segments, a zero sketch and the climber's first state."""
    cdef int seg
    for seg in range(3):
        t.segment_head[seg] = t.segment_tail[seg] = NO_SLOT
        t.segment_size[seg] = 0
    if t.policy == POLICY_LRU:
        return
    memset(t.sketch, 0, t.sketch_words * sizeof(uint64_t))
    t.sketch_added = 0
    t.climb_hits = t.climb_misses = 0
    t.climb_previous_rate = 0.0
    t.climb_step = -CLIMB_STEP * <double>t.policy_capacity
    set_window(t, initial_window(t.policy_capacity))


cdef Py_ssize_t tinylfu_capacity(slot_t max_entries, Py_ssize_t budget, dim_t dim,
                                 int storage) noexcept nogil:
    """Entries the segments' shares are measured against: the entry bound, or as
    many entries of the fixed dim (of dim 1 when none is fixed) as the budget holds
    in `storage`."""
    cdef Py_ssize_t fit = budget // (entry_bytes(storage, dim if dim else 1) + POLICY_SLOT_BYTES)
    return max(<Py_ssize_t>1, min(<Py_ssize_t>max_entries, fit))


cdef int policy_init(Table *t, int policy) noexcept nogil:
    """Select the policy of a freshly initialised, empty table; -1 (nothing
    allocated) when the sketch's memory cannot be had."""
    t.policy = policy
    if policy == POLICY_TINYLFU:
        t.policy_capacity = <slot_t>tinylfu_capacity(t.max_entries, t.memory_budget_bytes, t.dim,
                                                      t.storage)
        t.sketch_words = sketch_words_for(t.policy_capacity, t.memory_budget_bytes)
        t.sketch = <uint64_t *>calloc(t.sketch_words, sizeof(uint64_t))
        if t.sketch == NULL:
            t.sketch_words = 0
            t.policy = POLICY_LRU
            return -1
        t.sketch_period = SKETCH_PERIOD_PER_ENTRY * <unsigned long long>t.policy_capacity
        t.policy_entry_bytes = POLICY_SLOT_BYTES
        t.policy_fixed_bytes = <Py_ssize_t>(t.sketch_words * sizeof(uint64_t))
        t.used_bytes = t.policy_fixed_bytes
    policy_reset(t)
    return 0


cdef int policy_reserve(Table *t, slot_t capacity) noexcept nogil:
    """Room in policy_slots for `capacity` entry slots (before the entry table
    grows); -1 when it cannot be had (the old array stays as it was)."""
    cdef uint32_t *grown
    if t.policy == POLICY_LRU or capacity <= t.policy_slot_capacity:
        return 0
    grown = <uint32_t *>realloc(t.policy_slots, <size_t>capacity * sizeof(uint32_t))
    if grown == NULL:
        return -1
    t.policy_slots = grown
    t.policy_slot_capacity = capacity
    return 0


cdef inline void policy_clear(Table *t) noexcept nogil:
    policy_reset(t)


cdef void policy_free(Table *t) noexcept nogil:
    free(t.sketch)
    t.sketch = NULL
    free(t.policy_slots)
    t.policy_slots = NULL
    t.policy_slot_capacity = 0


cdef inline Py_ssize_t policy_allocated_bytes(const Table *t) noexcept nogil:
    return <Py_ssize_t>(t.sketch_words * sizeof(uint64_t)
                        + <size_t>t.policy_slot_capacity * sizeof(uint32_t))


cdef int check_segment(const Table *t, int seg, unsigned char *state, Violation *v) noexcept nogil:
    """One W-TinyLFU segment: links, tags, size and key bits of every slot on it."""
    cdef slot_t s = t.segment_head[seg]
    cdef slot_t prev = NO_SLOT
    cdef slot_t n = 0
    cdef slot_t cap = t.entry_capacity
    while s != NO_SLOT:
        if not 0 <= s < cap or s >= t.policy_slot_capacity:
            return fail(v, 1, s, cap)
        if state[s] != UNSEEN:
            return fail(v, 2, s)
        if t.entries[s].recency_prev != prev:
            return fail(v, 3, s)
        if segment_of(t, s) != seg:
            return fail(v, 34, s, segment_of(t, s), seg)
        if slot_bits(t, s) != (<uint32_t>digest_hash(t.entries[s].digest)) >> 2:
            return fail(v, 35, s)
        state[s] = ON_POLICY
        n += 1
        prev = s
        s = t.entries[s].recency_next
    if t.segment_tail[seg] != prev:
        return fail(v, 4)
    if n != t.segment_size[seg]:
        return fail(v, 36, seg, n, t.segment_size[seg])
    return 0


cdef int check_policy(const Table *t, unsigned char *state, Violation *v) noexcept nogil:
    """The policy's part of the invariant walk (core/invariants.pxi): every live slot
    on the policy's lists exactly once, links consistent; for W-TinyLFU also the
    segments' tags, sizes and shares and the sketch's state. Marks each live slot
    ON_POLICY in `state`; 1 with `v` set when something is broken."""
    cdef slot_t s = t.recency_head
    cdef slot_t prev = NO_SLOT
    cdef slot_t n = 0
    cdef slot_t cap = t.entry_capacity
    cdef int seg
    if t.policy == POLICY_TINYLFU:
        if t.recency_head != NO_SLOT or t.recency_tail != NO_SLOT:
            return fail(v, 37)
        for seg in range(3):
            if check_segment(t, seg, state, v):
                return 1
        n = t.segment_size[WINDOW] + t.segment_size[PROBATION] + t.segment_size[PROTECTED]
        if n != t.size:
            return fail(v, 5, n, t.size)
        if not (1 <= t.window_max <= max(<slot_t>1, t.policy_capacity - 1)):
            return fail(v, 38, t.window_max)
        if t.segment_size[WINDOW] > t.window_max or t.segment_size[PROTECTED] > t.protected_max:
            return fail(v, 39, t.segment_size[WINDOW], t.segment_size[PROTECTED])
        if t.protected_max != (<Py_ssize_t>(t.policy_capacity - t.window_max) * 4) // 5:
            return fail(v, 40, t.protected_max)
        if (t.sketch == NULL or t.sketch_words < SKETCH_BLOCK_WORDS
                or t.sketch_words & (t.sketch_words - 1)
                or t.sketch_added >= t.sketch_period
                or t.policy_fixed_bytes != <Py_ssize_t>(t.sketch_words * sizeof(uint64_t))):
            return fail(v, 41)
        return 0
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
