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


cdef bytes snapshot_meta(object source, int fd, uint64_t size, SnapLayout *L):
    """The header and groups section of the snapshot open at `fd` (`size` bytes),
    every count, offset and checksum checked against the file: fills `L`, returns
    the groups section (its records first). SnapshotError naming `source`."""
    try:
        return read_meta(fd, size, L)
    except _SnapshotFormatError as exc:
        raise SnapshotError(f"cannot load snapshot {source!r}: {exc}") from None


cdef bytes read_meta(int fd, uint64_t size, SnapLayout *L):
    bad = _SnapshotFormatError
    if size == 0:
        raise bad("the file is empty")
    if size < SNAP_V1_HEADER_BYTES:
        raise bad(f"the file is {size} bytes, shorter than the {SNAP_V1_HEADER_BYTES}-byte header "
                  "(truncated, or not a snapshot)")
    head = read_section(fd, 0, min(size, <uint64_t>SNAP_HEADER_BYTES), "header")
    if head[:8] != SNAPSHOT_MAGIC:
        raise bad(f"not an embcache snapshot (it starts with {head[:8]!r}, not {SNAPSHOT_MAGIC!r})")
    version, byte_order = struct.unpack_from("<II", head, 8)
    if byte_order != SNAPSHOT_BYTE_ORDER:
        if byte_order == 0x04030201:
            raise bad("it was written in big-endian byte order; this embcache reads "
                      "little-endian snapshots")
        raise bad(f"its byte-order mark is {byte_order:#010x}, not 0x01020304 (corrupt header)")
    cdef uint64_t hb, summed, trailer
    cdef bint bound          # version 2: the file id and the chained checksums
    if version == SNAPSHOT_VERSION or version == 2:
        hb, summed, trailer, layout, bound = (SNAP_HEADER_BYTES, SNAP_HEADER_SUMMED,
                                              SNAP_TRAILER_BYTES, SNAPSHOT_HEADER, True)
    elif version == 1:
        hb, summed, trailer, layout, bound = (SNAP_V1_HEADER_BYTES, SNAP_V1_HEADER_SUMMED,
                                              SNAP_V1_TRAILER_BYTES, SNAPSHOT_HEADER_V1, False)
    else:
        raise bad(f"it is format version {version}; this embcache reads versions 1 to "
                  f"{SNAPSHOT_VERSION}")
    if size < hb:
        raise bad(f"the file is {size} bytes, shorter than the {hb}-byte header of format "
                  f"version {version} (truncated)")
    fields = layout.unpack_from(head)
    (magic, version, byte_order, header_bytes, digest_scheme, checksum_scheme, n_groups_,
     n_entries_, fixed_dim_, max_entries_rec, mb_rec, ttl_rec, saved_at, file_bytes,
     entries_offset_, groups_offset_, flags, reserved) = fields[:18]
    file_id_, entries_sum_rec, groups_sum_rec, reserved2 = fields[18:] if bound else (0, 0, 0, 0)
    if snapshot_checksum(head[:summed], SNAP_SEED_HEADER) != int.from_bytes(
            head[summed:hb], "little"):
        raise bad("the header fails its checksum (corrupt header)")
    # version 3 records the rows' storage where version 2 has a reserved 0 (float32)
    cdef int snap_storage = EMBCACHE_STORE_F32
    if version == SNAPSHOT_VERSION:
        if reserved2 >= len(CODEC_STORAGES):
            raise bad(f"the header records storage {reserved2}, which this embcache does not "
                      f"know (0 to {len(CODEC_STORAGES) - 1}: {', '.join(CODEC_STORAGES)})")
        snap_storage = reserved2
        reserved2 = 0
    if header_bytes != hb or flags != 0 or reserved != 0 or reserved2 != 0:
        raise bad("the header records an unknown layout (header size, flags or reserved fields)")
    if digest_scheme != SNAPSHOT_DIGEST_SCHEME:
        raise bad(f"it names keys by digest scheme {digest_scheme}; this embcache knows scheme "
                  f"{SNAPSHOT_DIGEST_SCHEME} (BLAKE2b-256 of the canonical key encoding)")
    if checksum_scheme != SNAPSHOT_CHECKSUM_SCHEME:
        raise bad(f"it uses checksum scheme {checksum_scheme}; this embcache knows scheme "
                  f"{SNAPSHOT_CHECKSUM_SCHEME} (mix64 v1)")
    if file_bytes != size:
        if size < file_bytes:
            raise bad(f"it is truncated: the header records {file_bytes} bytes, the file has "
                      f"{size}")
        raise bad(f"the header records {file_bytes} bytes, but the file has {size} "
                  "(trailing bytes)")
    if not 1 <= max_entries_rec <= MAX_SLOTS:
        raise bad(f"the header records max_entries={max_entries_rec}")
    if not (math.isfinite(mb_rec) and 0 < mb_rec < 2.0 ** 42):
        raise bad(f"the header records max_memory_mb={mb_rec!r}")
    if math.isnan(ttl_rec) or ttl_rec < 0:
        raise bad(f"the header records ttl_seconds={ttl_rec!r}")
    if not math.isfinite(saved_at):
        raise bad(f"the header records the save time {saved_at!r}")
    if fixed_dim_ > SNAP_MAX_DIM:
        raise bad(f"the header records dim={fixed_dim_}")
    if fixed_dim_ and (entry_bytes(snap_storage, <dim_t>fixed_dim_)
                       > <Py_ssize_t>math.floor(mb_rec * 1048576.0)):
        # no cache saves this: its constructor refuses limits that cannot hold one vector
        raise bad(f"the header records max_memory_mb={mb_rec!r}, which cannot hold one vector "
                  f"of its dim {fixed_dim_}")

    cdef uint64_t n_entries = n_entries_
    cdef uint32_t n_groups = n_groups_
    cdef uint64_t fixed_dim = fixed_dim_
    cdef uint64_t entries_offset = entries_offset_, groups_offset = groups_offset_
    cdef uint64_t blocks_bytes = 0
    cdef uint64_t file_id = file_id_
    # every count against the file's size before any is used
    if n_entries > (size - hb) // sizeof(SnapRecord):
        raise bad(f"the header records {n_entries} entries, more than the {size}-byte file holds")
    if n_groups > n_entries or n_groups > (size - hb) // sizeof(SnapGroup):
        raise bad(f"the header records {n_groups} dimension groups for {n_entries} entries")
    if (groups_offset > size
            or size - groups_offset != <uint64_t>n_groups * sizeof(SnapGroup) + trailer):
        raise bad(f"the groups section does not end the file (offset {groups_offset}, "
                  f"{n_groups} groups, {size} bytes)")
    if (entries_offset < hb or entries_offset > groups_offset
            or groups_offset - entries_offset != n_entries * sizeof(SnapRecord) + trailer):
        raise bad(f"the entries section (offset {entries_offset}, {n_entries} entries) does not "
                  f"end where the groups section starts ({groups_offset})")

    groups_data = read_section(fd, groups_offset, size - groups_offset, "groups")
    cdef const unsigned char *gp = <const unsigned char *>(<char *>groups_data)
    cdef size_t groups_bytes = <size_t>n_groups * sizeof(SnapGroup)
    cdef uint64_t gsum, gid = 0
    memcpy(&gsum, gp + groups_bytes + trailer - 8, 8)
    if bound:
        memcpy(&gid, gp + groups_bytes, 8)
    if section_checksum(gp, groups_bytes, gid, SNAP_SEED_GROUPS, bound) != gsum:
        raise bad("the groups section fails its checksum (corrupt)")
    if gid != file_id or (bound and gsum != <uint64_t>groups_sum_rec):
        raise bad(MIXED.format("groups section"))
    cdef const SnapGroup *groups = <const SnapGroup *>gp
    problem = check_groups(groups, n_groups, n_entries, size, fixed_dim, snap_storage,
                           &blocks_bytes)
    if problem is not None:
        raise bad(problem)
    if entries_offset != hb + blocks_bytes:
        raise bad(f"the vector blocks ({blocks_bytes} bytes) do not end where the entries section "
                  f"starts ({entries_offset})")

    L.version = version
    L.header_bytes = hb
    L.trailer_bytes = trailer
    L.bound = bound
    L.storage = snap_storage
    L.n_entries = n_entries
    L.n_groups = n_groups
    L.fixed_dim = fixed_dim
    L.max_entries = max_entries_rec
    L.max_memory_mb = mb_rec
    L.ttl_seconds = ttl_rec
    L.saved_at = saved_at
    L.entries_offset = entries_offset
    L.groups_offset = groups_offset
    L.blocks_bytes = blocks_bytes
    L.file_id = file_id
    L.entries_sum = entries_sum_rec
    return groups_data


cdef int snapshot_entries(object source, int fd, const SnapLayout *L, const SnapGroup *groups,
                          SnapRecord *recs, uint64_t *counts) except -1:
    """Read the entries section (L from snapshot_meta) into `recs` (room for
    n_entries records and the trailer) and check it: its checksum, its file id,
    each record against the groups (`counts`: n_groups zeroed counters).
    SnapshotError naming `source`."""
    try:
        return read_entries(fd, L, groups, recs, counts)
    except _SnapshotFormatError as exc:
        raise SnapshotError(f"cannot load snapshot {source!r}: {exc}") from None


cdef int read_entries(int fd, const SnapLayout *L, const SnapGroup *groups, SnapRecord *recs,
                      uint64_t *counts) except -1:
    bad = _SnapshotFormatError
    cdef uint64_t entries_bytes = L.n_entries * sizeof(SnapRecord)
    cdef uint64_t trailer = L.trailer_bytes
    cdef uint64_t esum = 0, eid = 0
    cdef Py_ssize_t got_entries, bad_record
    cdef bint ok = False
    with nogil:
        got_entries = read_at(fd, <char *>recs, <size_t>(entries_bytes + trailer),
                              L.entries_offset)
        if got_entries == <Py_ssize_t>(entries_bytes + trailer):
            memcpy(&esum, (<char *>recs) + entries_bytes + trailer - 8, 8)
            if L.bound:
                memcpy(&eid, (<char *>recs) + entries_bytes, 8)
            ok = section_checksum(<const unsigned char *>recs, <size_t>entries_bytes, eid,
                                  SNAP_SEED_ENTRIES, L.bound) == esum
    if got_entries < 0:
        raise OSError(-got_entries, os.strerror(-got_entries))
    if got_entries != <Py_ssize_t>(entries_bytes + trailer):
        raise bad("the file ended inside the entries section (it shrank while being read)")
    if not ok:
        raise bad("the entries section fails its checksum (corrupt)")
    if eid != L.file_id or (L.bound and esum != L.entries_sum):
        raise bad(MIXED.format("entries section"))
    bad_record = check_records(recs, L.n_entries, groups, L.n_groups, counts)
    if bad_record == <Py_ssize_t>L.n_entries:
        raise bad("the entries' groups do not match the groups' counts")
    if bad_record >= 0:
        raise bad(f"entry {bad_record} is malformed (group {recs[bad_record].group} of "
                  f"{L.n_groups}, flags {recs[bad_record].flags}, expiry "
                  f"{recs[bad_record].expires!r})")

    return 0


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
