# get_or_compute's cross-process single flight over the segment's pending markers
# (C in flight.h): claim, compute, store, release and wake; wait on a futex;
# take over a dead or late owner's key. Included at the end of _segment.pyx.

cdef object flight_get_or_compute(SharedEmbeddingCache self, tuple seq, object compute,
                                  double late):
    """get_or_compute's single flight (see the method's docstring and flight.h)."""
    cdef Py_ssize_t n = len(seq)
    cdef cnp.ndarray matrix = np.zeros((n, self.seg.L.dim), dtype=np.float32)
    cdef char *base = <char *>cnp.PyArray_DATA(matrix)
    cdef size_t row_bytes = self.seg.L.dim * 4      # of the float32 result
    positions = {}
    for i, key in enumerate(seq):
        positions.setdefault(key, []).append(i)
    todo = list(positions)
    cdef uint32_t s, seen
    cdef int m
    while todo:
        owned = []       # (key, stripe, marker or -1)
        waiting = []     # (stripe, marker, word seen)
        # from the first claim until every marker of this round is released: an
        # error anywhere (a lock, a dead owner's check, compute, a store) releases
        # them, and close() from another thread refuses while they are held
        self.waiters += 1
        try:
            claim_or_wait(self, todo, positions, base, late, owned, waiting)
            if owned:
                compute_and_store(self, owned, compute, positions, base)
        finally:
            try:
                release(self, owned)
            finally:
                self.waiters -= 1
        if waiting:      # sleep on one of them; every key is looked at again after
            key, s, m, seen = waiting[0]
            self.waiters += 1
            with nogil:
                embc_futex_wait(embc_pending_word(&self.seg, s, m), seen, WAKE_EVERY_S)
            self.waiters -= 1
        todo = [w[0] for w in waiting]
    for rows in positions.values():
        for i in rows[1:]:
            memcpy(base + <Py_ssize_t>i * row_bytes, base + <Py_ssize_t>rows[0] * row_bytes,
                   row_bytes)
    return matrix


cdef int claim_or_wait(SharedEmbeddingCache self, list todo, dict positions, char *base,
                       double late, list owned, list waiting) except -1:
    """For each key of `todo`: a hit is decoded into its row of `base`; a key
    nobody computes is claimed (appended to `owned`); a key another live, timely
    owner computes is appended to `waiting`; a dead or late owner's key is taken
    over. Nothing Python is made while a stripe is locked."""
    cdef int32_t pid = os.getpid()
    cdef unsigned int start = own_start
    cdef uint64_t thread = threading.get_ident()
    cdef size_t row_bytes = self.seg.L.dim * 4      # of the float32 result
    cdef CacheKey k
    cdef uint64_t h
    cdef uint32_t s, seen
    cdef int m
    cdef const char *row
    cdef embc_pending *marker
    cdef double now, started
    cdef int32_t owner
    cdef unsigned int owner_start
    cdef float *dst
    for key in todo:
        k = <CacheKey>key
        h = embc_hash(&self.seg, k.ident.digest)
        s = embc_stripe_of(&self.seg, h)
        now = self.clock_now()
        dst = <float *>(base + <Py_ssize_t>positions[key][0] * row_bytes)   # before the lock
        self.lock(s)
        row = embc_lookup(&self.seg, s, h, k.ident.digest, now, 1)
        if row != NULL:
            decode_row(&self.seg.L, dst, row)
            embc_unlock(&self.seg, s)
            continue
        m = embc_pending_find(&self.seg, s, k.ident.digest)
        if m >= 0 and embc_pending_mine(&self.seg, s, m, k.ident.digest, pid, start, thread):
            embc_unlock(&self.seg, s)
            raise CallContextError(
                "get_or_compute would wait on a key this very call is computing "
                "(compute asked for it again)")
        if m >= 0:
            marker = embc_pending_get(&self.seg, s, m)
            seen = marker.word
            owner = marker.pid          # C locals: nothing Python under the lock
            owner_start = marker.start
            started = marker.started
            embc_unlock(&self.seg, s)
            if now - started <= late and owner_alive(owner, owner_start):
                waiting.append((key, s, m, seen))
                continue
            self.lock(s)          # take it over, unless it changed meanwhile
            if embc_pending_word(&self.seg, s, m)[0] != seen:
                embc_unlock(&self.seg, s)
                waiting.append((key, s, m, seen))
                continue
            m = embc_pending_own(&self.seg, s, m, k.ident.digest, pid, start, thread, now)
            embc_unlock(&self.seg, s)
            embc_futex_wake(embc_pending_word(&self.seg, s, m))
            owned.append((key, s, m))
            continue
        m = embc_pending_own(&self.seg, s, -1, k.ident.digest, pid, start, thread, now)
        embc_unlock(&self.seg, s)
        owned.append((key, s, m))
    return 0


cdef int compute_and_store(SharedEmbeddingCache self, list owned, object compute, dict positions,
                           char *base) except -1:
    missing = [o[0] for o in owned]
    self.waiters += 1            # close() now refuses: the markers must be released
    try:
        result = compute(list(missing))
    finally:
        self.waiters -= 1
    cdef cnp.ndarray rows = self.checked_rows(batch_rows(self, result, missing), 2,
                                              "compute's result")
    if rows.shape[0] != len(missing):
        raise InvalidVectorError(
            f"compute returned {rows.shape[0]} vectors for {len(missing)} keys")
    cdef const float *src = <const float *>cnp.PyArray_DATA(rows)
    cdef size_t dim = self.seg.L.dim
    cdef double now = self.clock_now()
    cdef float *dst
    cdef Py_ssize_t j
    for j, key in enumerate(missing):
        self.store_row(<CacheKey>key, src + j * dim, now)
        dst = <float *>(base + <Py_ssize_t>positions[key][0] * dim * 4)
        memcpy(dst, src + j * dim, dim * 4)
        round_trip(&self.seg.L, dst)      # what a get of it returns
    return 0

cdef int release(SharedEmbeddingCache self, list owned) except -1:
    """Release the markers of `owned` this thread still holds, and wake their
    waiters."""
    cdef int32_t pid = os.getpid()
    cdef unsigned int start = own_start
    cdef uint64_t thread = threading.get_ident()
    cdef uint32_t s
    cdef int m
    cdef bint mine
    for key, s, m in owned:
        if m < 0:
            continue
        self.lock(s)
        mine = embc_pending_mine(&self.seg, s, m, (<CacheKey>key).ident.digest, pid, start,
                                 thread)
        if mine:
            embc_pending_release(&self.seg, s, m)
        embc_unlock(&self.seg, s)
        if mine:
            embc_futex_wake(embc_pending_word(&self.seg, s, m))
    return 0
