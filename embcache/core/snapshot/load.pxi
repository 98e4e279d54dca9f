# Snapshots, loading (the format: core/snapshot/format.pxi).
#
# Loading reads the header and both small sections, checks every count, offset
# and dimension against the file's size (so no hostile number can make it
# allocate more than the file holds) and every checksum, and only then builds a
# new cache, streaming each block through two buffers: a reader thread
# (core/snapshot/reader.h) reads one and checks its floats are finite while this thread
# checksums the other and stores its rows; the block's checksum is compared at
# its end. A cache is returned only when everything has passed; on any failure it
# is dropped, never seen.
#
# Rows of a compact storage (core/convert.h) are decoded to check they are
# finite. Loaded into a cache of the snapshot's storage they are stored as read,
# byte for byte; into another, they are stored from their float32 values (decoded,
# then encoded again), each checked against the new storage first.


cdef struct ExpiryRank:
    double expires
    Py_ssize_t rank
    slot_t slot


cdef Py_ssize_t read_at(int fd, char *p, size_t n, uint64_t offset) noexcept nogil:
    """Read up to `n` bytes at `offset` (fewer only at the end of the file); the
    count, or -errno."""
    cdef ssize_t r
    cdef size_t got = 0
    cdef size_t want
    while got < n:
        want = n - got
        if want > 1073741824:
            want = 1073741824
        r = pread(fd, p + got, want, <off_t>(offset + got))
        if r < 0:
            if errno == EINTR:
                continue
            return -errno
        if r == 0:
            break
        got += <size_t>r
    return <Py_ssize_t>got


cdef int compare_expiry(const void *a, const void *b) noexcept nogil:
    cdef const ExpiryRank *x = <const ExpiryRank *>a
    cdef const ExpiryRank *y = <const ExpiryRank *>b
    if x.expires < y.expires:
        return -1
    if x.expires > y.expires:
        return 1
    return -1 if x.rank < y.rank else (1 if x.rank > y.rank else 0)


cdef Py_ssize_t choose_entries(const Table *t, const SnapRecord *recs, Py_ssize_t n,
                               const SnapGroup *groups, double wall_now, double now,
                               unsigned char *keep, double *expires, uint64_t *kept) noexcept nogil:
    """Which entries the new cache keeps: walking from the most recent, those not
    expired on the wall clock, until the next one no longer fits the entry or the
    memory bound (one larger than the whole budget is passed over). Each entry
    costs what a put into this cache charges (with the policy's per-entry bytes),
    and the budget starts where the empty cache's accounting does (after the
    policy's fixed bytes), so storing the kept ones evicts nothing. Their
    cache-clock expiry goes to `expires` (a remaining TTL longer than the cache's
    own is cut to it); per-group counts to `kept`. Returns how many are kept."""
    cdef Py_ssize_t i, count = 0
    cdef Py_ssize_t used = t.used_bytes, need
    cdef double remaining
    for i in range(n - 1, -1, -1):
        if recs[i].expires <= wall_now:
            continue
        need = entry_bytes(t.storage, <dim_t>groups[recs[i].group].dim) + t.policy_entry_bytes
        if need > t.memory_budget_bytes - t.policy_fixed_bytes:
            continue
        if count >= t.max_entries or used + need > t.memory_budget_bytes:
            break
        remaining = recs[i].expires - wall_now
        if t.ttl_seconds > 0:
            expires[i] = now + (remaining if remaining < t.ttl_seconds else t.ttl_seconds)
        else:
            expires[i] = INFINITY
        keep[i] = 1
        kept[recs[i].group] += 1
        count += 1
        used += need
    return count


DEF ROWS_STORED = 0
DEF ROW_NOT_FINITE = 1           # a compact row decodes to NaN or infinity
DEF ROW_UNSTORABLE = 2           # a value the cache's storage cannot hold


cdef int store_block_rows(Table *t, const SnapRecord *recs, const unsigned char *keep,
                          const Py_ssize_t *order, Py_ssize_t j, Py_ssize_t rows,
                          const char *buf, dim_t dim, int32_t slab_index, double now,
                          int snap_storage, float32_t *floats, Py_ssize_t *where,
                          double *value) noexcept nogil:
    """Store the kept ones of `rows` rows of `snap_storage` read into `buf`
    (entries order[j:j+rows]). A compact row is decoded into `floats` (dim
    float32) and checked finite, kept or not. A row of the cache's storage is
    stored as read; another is checked against the cache's storage, then stored
    from its float32 values. ROWS_STORED, or ROW_NOT_FINITE / ROW_UNSTORABLE
    with where[0] = the entry, where[1] = the position and `value` its value
    (rows before it are stored: the caller drops the cache)."""
    cdef Source src
    cdef KeyId k
    cdef Py_ssize_t r, i
    cdef ptrdiff_t bad
    cdef size_t row_bytes = embcache_row_bytes(snap_storage, <size_t>dim)
    cdef const char *row
    cdef const float *values
    src.n = dim
    src.stride = 4
    src.is_f64 = False
    for r in range(rows):
        i = order[j + r]
        row = buf + <size_t>r * row_bytes
        values = <const float *>row
        if snap_storage != EMBCACHE_STORE_F32:
            embcache_decode_row(snap_storage, row, <size_t>dim, floats)
            values = floats
            if not embcache_f32_all_finite(floats, <size_t>dim):
                where[0] = i
                return ROW_NOT_FINITE
        if not keep[i]:
            continue
        if snap_storage == t.storage:
            src.data = row              # stored as read, not rounded again
            src.encoded = True
        else:
            bad = embcache_first_unstorable(t.storage, values, <size_t>dim)
            if bad >= 0:
                where[0] = i
                where[1] = bad
                value[0] = values[bad]
                return ROW_UNSTORABLE
            src.data = <const char *>values
            src.encoded = False
        memcpy(k.digest, recs[i].digest, sizeof(k.digest))
        k.hash = digest_hash(k.digest)
        store(t, &k, &src, slab_index, now)
    return ROWS_STORED


cdef int finish_load(Table *t, const SnapRecord *recs, Py_ssize_t n,
                     const unsigned char *keep, const double *expires, bint reorder,
                     ExpiryRank *ranks) noexcept nogil:
    """Give the stored entries their expiries, the saved recency order (when the
    blocks were stored group by group) and an expiry list in expiry order; stats
    start at zero. 1 if an entry is missing (cannot happen after the size check).
    Under W-TinyLFU the reorder rebuilds the segments from empty, inserting in the
    saved order as a one-group load does (hits would count in the sketch and
    promote entries to protected)."""
    cdef Py_ssize_t i, m = 0
    cdef KeyId k
    cdef slot_t s
    if reorder and t.policy != POLICY_LRU:
        policy_reset(t)
    for i in range(n):
        if not keep[i]:
            continue
        memcpy(k.digest, recs[i].digest, sizeof(k.digest))
        k.hash = digest_hash(k.digest)
        s = find(t, &k)
        if s == NO_SLOT:
            return 1
        t.entries[s].expires_at = expires[i]
        if reorder:                      # least recent first: each becomes most recent
            if t.policy == POLICY_LRU:
                policy_on_hit(t, s)
            else:
                policy_on_insert(t, s, &k)
        ranks[m].expires = expires[i]
        ranks[m].rank = m
        ranks[m].slot = s
        m += 1
    if t.ttl_seconds > 0:
        qsort(ranks, m, sizeof(ExpiryRank), compare_expiry)
        t.expiry_head = t.expiry_tail = NO_SLOT
        for i in range(m):
            expiry_push_tail(t, ranks[i].slot)
    memset(&t.stats, 0, sizeof(Stats))
    return 0


cdef bytes read_section(int fd, uint64_t offset, uint64_t nbytes, str what):
    """`nbytes` at `offset` (inside the file: checked by the caller), or _SnapshotFormatError."""
    data = os.pread(fd, <Py_ssize_t>nbytes, <Py_ssize_t>offset) if nbytes else b""
    if <uint64_t>len(data) != nbytes:
        raise _SnapshotFormatError(f"the file ended inside the {what} section (it shrank while "
                                  "being read)")
    return data


cdef str MIXED = ("the {} belongs to another save than the header (the file mixes the bytes of two "
         "saves: spliced, or rewritten while being read)")


cdef object load_limit(object given, object recorded):
    return recorded if given is UNSET else given


cdef SyncEmbeddingCache snapshot_load(object path, object max_entries, object ttl_seconds,
                                      object max_memory_mb, object dim, object clock,
                                      object policy, object storage):
    source = snapshot_path(path, "load")
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(EISDIR, os.strerror(EISDIR), source)
        if not stat.S_ISREG(st.st_mode):
            raise SnapshotError(f"cannot load snapshot {source!r}: not a regular file")
        try:
            return load_fd(fd, st.st_size, max_entries, ttl_seconds, max_memory_mb, dim, clock,
                           policy, storage)
        except _SnapshotFormatError as exc:
            raise SnapshotError(f"cannot load snapshot {source!r}: {exc}") from None
        except _SnapshotStorageError as exc:
            raise InvalidVectorError(f"cannot load snapshot {source!r}: {exc}") from None
    finally:
        os.close(fd)


cdef SyncEmbeddingCache load_fd(int fd, uint64_t size, object max_entries_arg, object ttl_arg,
                                object mb_arg, object dim_arg, object clock, object policy,
                                object storage_arg):
    cdef SnapLayout layout
    groups_data = read_meta(fd, size, &layout)
    bad = _SnapshotFormatError
    cdef const SnapGroup *groups = <const SnapGroup *>(<char *>groups_data)
    cdef uint64_t hb = layout.header_bytes, trailer = layout.trailer_bytes
    cdef bint bound = layout.bound
    cdef int snap_storage = layout.storage
    cdef uint64_t n_entries = layout.n_entries
    cdef uint32_t n_groups = layout.n_groups
    cdef uint64_t blocks_bytes = layout.blocks_bytes, file_id = layout.file_id
    max_entries_rec, mb_rec, ttl_rec = layout.max_entries, layout.max_memory_mb, layout.ttl_seconds
    fixed_dim_ = layout.fixed_dim

    # limits: given, else recorded; the cache is built only from here on
    me = load_limit(max_entries_arg, max_entries_rec)
    ttl = load_limit(ttl_arg, None if ttl_rec == 0 else ttl_rec)
    mb = load_limit(mb_arg, mb_rec)
    dim_ = load_limit(dim_arg, fixed_dim_ or None)
    storage_ = load_limit(storage_arg, CODEC_STORAGES[snap_storage])

    cdef SnapRecord *recs = NULL
    cdef unsigned char *keep = NULL
    cdef double *expires = NULL
    cdef Py_ssize_t *order = NULL
    cdef uint64_t *counts = NULL
    cdef uint64_t *kept = NULL
    cdef int32_t *slab_index = NULL
    cdef ExpiryRank *ranks = NULL
    cdef char *buf = NULL
    cdef float32_t *floats = NULL           # a compact row decoded
    cdef Py_ssize_t where[2]
    cdef double value = 0.0
    cdef size_t max_dim = 0
    cdef Py_ssize_t n = <Py_ssize_t>n_entries, i, j, rows, n_kept = 0
    cdef uint32_t g
    cdef uint64_t offset, pos, block, want, row_bytes
    cdef uint64_t entries_bytes = n_entries * sizeof(SnapRecord)
    cdef ptrdiff_t got
    cdef char *chunk
    cdef embcache_reader reader
    cdef size_t cap
    cdef double wall_now, now, given
    cdef embcache_mix_state mix
    cdef SyncEmbeddingCache cache
    cdef Table *t
    cdef int failed
    cdef int all_finite = 0
    try:
        recs = <SnapRecord *>malloc(<size_t>(entries_bytes + trailer))
        counts = <uint64_t *>calloc(<size_t>n_groups + 1, sizeof(uint64_t))
        kept = <uint64_t *>calloc(<size_t>n_groups + 1, sizeof(uint64_t))
        slab_index = <int32_t *>calloc(<size_t>n_groups + 1, sizeof(int32_t))
        keep = <unsigned char *>calloc(<size_t>n_entries + 1, 1)
        expires = <double *>malloc((<size_t>n_entries + 1) * sizeof(double))
        order = <Py_ssize_t *>malloc((<size_t>n_entries + 1) * sizeof(Py_ssize_t))
        ranks = <ExpiryRank *>malloc((<size_t>n_entries + 1) * sizeof(ExpiryRank))
        if (recs == NULL or counts == NULL or kept == NULL or slab_index == NULL or keep == NULL
                or expires == NULL or order == NULL or ranks == NULL):
            raise MemoryError(f"not enough memory to read {n_entries} snapshot entries")
        read_entries(fd, &layout, groups, recs, counts)

        # everything but the vectors' checksums has passed: build the cache
        cache = SyncEmbeddingCache(me, ttl, mb, dim=dim_, clock=clock, policy=policy,
                                   storage=storage_)
        t = &cache.table
        if t.dim:
            for g in range(n_groups):
                if groups[g].dim != <uint64_t>t.dim:
                    raise DimensionMismatchError(
                        f"the snapshot holds vectors of dim {groups[g].dim}, but dim={t.dim} "
                        "was asked for")
        # entries by group, least recent first within each (counting sort)
        memset(counts, 0, (<size_t>n_groups + 1) * sizeof(uint64_t))
        with nogil:
            pos = 0
            for g in range(n_groups):
                counts[g] = pos
                pos += groups[g].count
            for i in range(n):
                order[counts[recs[i].group]] = i
                counts[recs[i].group] += 1
        given = cache.now_unlocked()
        wall_now = time.time()
        embcache_lock_acquire(&cache.lock)
        now = cache.now_locked(given)
        n_kept = choose_entries(t, recs, n, groups, wall_now, now, keep, expires, kept)
        failed = 0
        for g in range(n_groups):
            slab_index[g] = -1
            if kept[g]:
                slab_index[g] = prepare_put(t, <dim_t>groups[g].dim, n_kept)
                if slab_index[g] < 0:
                    failed = 1
                    break
        embcache_lock_release(&cache.lock)
        if failed:
            raise MemoryError(f"could not allocate room for {n_kept} snapshot entries")

        # the blocks, one buffer at a time: checksum, check, store the kept rows
        offset = hb
        j = 0
        cap = SNAP_IO_BYTES
        for g in range(n_groups):
            row_bytes = embcache_row_bytes(snap_storage, <size_t>groups[g].dim)
            if row_bytes > cap:
                cap = row_bytes
            if groups[g].dim > max_dim:
                max_dim = <size_t>groups[g].dim
        buf = <char *>malloc(2 * cap)
        floats = <float32_t *>malloc((max_dim + 1) * sizeof(float32_t))
        if buf == NULL or floats == NULL:
            raise MemoryError("not enough memory for the snapshot's read buffers")
        posix_fadvise(fd, <off_t>hb, <off_t>blocks_bytes, POSIX_FADV_SEQUENTIAL)
        for g in range(n_groups):
            row_bytes = embcache_row_bytes(snap_storage, <size_t>groups[g].dim)
            block = groups[g].count * row_bytes
            embcache_mix_init(&mix, section_seed(file_id, SNAP_SEED_BLOCK + g))
            # a reader thread reads and checks one buffer while this one is checksummed
            # and stored
            failed = embcache_reader_start(&reader, fd, offset, block,
                                           (cap // row_bytes) * row_bytes, buf, buf + cap,
                                           snap_storage == EMBCACHE_STORE_F32)
            if failed:
                raise OSError(failed, f"cannot start the snapshot reader: {os.strerror(failed)}")
            try:
                pos = 0
                while pos < block:
                    with nogil:
                        chunk = embcache_reader_next(&reader, &got, &all_finite)
                    if got == -EMBCACHE_READER_SHORT:
                        raise bad("the file ended inside a vector block (it shrank while "
                                  "being read)")
                    if got < 0:
                        raise OSError(-got, os.strerror(-got))
                    if not all_finite:
                        raise bad(f"a vector of dim {groups[g].dim} holds NaN or infinity")
                    rows = <Py_ssize_t>(<uint64_t>got // row_bytes)
                    with nogil:
                        embcache_mix_update(&mix, chunk, <size_t>got)
                    failed = ROWS_STORED
                    if kept[g] or snap_storage != EMBCACHE_STORE_F32:
                        embcache_lock_acquire(&cache.lock)
                        with nogil:
                            failed = store_block_rows(
                                t, recs, keep, order, j, rows, chunk, <dim_t>groups[g].dim,
                                slab_index[g], now, snap_storage, floats, where, &value)
                        embcache_lock_release(&cache.lock)
                    if failed == ROW_NOT_FINITE:
                        raise bad(f"a vector of dim {groups[g].dim} holds NaN or infinity "
                                  f"(entry {where[0]}, stored as {CODEC_STORAGES[snap_storage]})")
                    if failed == ROW_UNSTORABLE:
                        digest = bytes((<char *>recs[where[0]].digest)[:32]).hex()
                        raise _SnapshotStorageError(
                            f"converting to storage={storage_!r}: "
                            + str(storage_value_error(
                                f"entry {where[0]} (key digest {digest}) value [{where[1]}]",
                                value, t.storage))
                            + "; nothing was loaded")
                    with nogil:
                        embcache_reader_release(&reader)
                    j += rows
                    pos += <uint64_t>got
            finally:
                with nogil:
                    embcache_reader_stop(&reader)
            if embcache_mix_final(&mix) != groups[g].checksum:
                raise bad(f"the block of vectors of dim {groups[g].dim} fails its checksum "
                          "(corrupt, or from another save: the file mixes two saves)")
            offset += block
        # a repeated digest lands on its first copy's entry: store counts it as an
        # overwrite, or as an expiration when the TTL is below the clock's resolution
        # (now + ttl == now); choose_entries budgets exactly what store charges, so
        # nothing else can leave the table short of the entries chosen
        repeats = t.stats.overwrites + t.stats.expirations
        if repeats or t.size != n_kept:
            raise bad(f"{max(repeats, n_kept - t.size)} entries repeat another entry's key "
                      "digest")
        embcache_lock_acquire(&cache.lock)
        if n_groups > 1 or t.ttl_seconds > 0:
            with nogil:
                failed = finish_load(t, recs, n, keep, expires, n_groups > 1, ranks)
        else:
            # one group stored least recent first, no TTL: order and expiries are right
            memset(&t.stats, 0, sizeof(Stats))
        embcache_lock_release(&cache.lock)
        if failed:
            raise bad("an entry went missing while loading")
        return cache
    finally:
        free(recs)
        free(counts)
        free(kept)
        free(slab_index)
        free(keep)
        free(expires)
        free(order)
        free(ranks)
        free(buf)
        free(floats)
