# Snapshots: a cache's live entries to one file and back.
#
# Owns: the snapshot format (README "Snapshots" has the table), saving it
# atomically and loading it verified. Entries are named by their stable digest,
# never by the per-process index hash, so the file holds no secret and a loading
# process re-keys every entry under its own SipHash key.
#
# Layout (little-endian; offsets in bytes):
#
#   [0, 128)                  header: magic, version, byte-order mark, schemes,
#                             counts, limits, wall-clock save time, section
#                             offsets, file size; checksum of bytes [0, 120) last
#   [128, entries_offset)     one block per dimension group: count * dim float32,
#                             rows in the policy's order (least recent first under LRU)
#   [entries_offset, ...)     N records of 48 bytes in recency order (least recent
#                             first): digest, wall-clock expiry, group; checksum
#   [groups_offset, EOF)      G records of 32 bytes: dim, count, the block's
#                             checksum; checksum
#
# Saving holds the cache lock only in short steps: one walk of the recency list
# copying digests and expiries (no vectors), then one lock per ~4 MiB of rows
# copied into the write buffer, each row looked up again by digest (an entry
# removed or rewritten meanwhile is left out or saved with its new vector).
# Checksums and writes run without the lock and without the GIL.
#
# Loading reads the header and both small sections, checks every count, offset
# and dimension against the file's size (so no hostile number can make it
# allocate more than the file holds) and every checksum, and only then builds a
# new cache, streaming each block through one buffer: a block's rows are stored
# as they are read and its checksum compared at its end. A cache is returned only
# when everything has passed; on any failure it is dropped, never seen.

DEF SNAP_HEADER_BYTES = 128
DEF SNAP_HEADER_SUMMED = 120      # the header checksum covers bytes [0, 120)
DEF SNAP_IO_BYTES = 4194304       # read / write buffer; rows copied per lock hold
DEF SNAP_SEED_HEADER = 1
DEF SNAP_SEED_GROUPS = 2
DEF SNAP_SEED_ENTRIES = 3
DEF SNAP_SEED_BLOCK = 256         # + the group's index
DEF SNAP_MAX_DIM = 1099511627776  # 2**40, the constructor's bound on dim

SNAPSHOT_MAGIC = b"EMBCSNAP"
SNAPSHOT_VERSION = 1
SNAPSHOT_BYTE_ORDER = 0x01020304
SNAPSHOT_DIGEST_SCHEME = 1        # BLAKE2b-256 of the canonical key encoding (DESIGN.md)
SNAPSHOT_CHECKSUM_SCHEME = 1      # mix64 v1 (_checksum.h)
# magic, version, byte order, header bytes, digest scheme, checksum scheme, groups,
# entries, fixed dim, max_entries, max_memory_mb, ttl_seconds, saved_at, file bytes,
# entries offset, groups offset, flags, reserved; then the u64 checksum
SNAPSHOT_HEADER = struct.Struct("<8s6I3Q3d5Q")

cdef object UNSET = object()       # a load keyword not given: the snapshot's value


cdef struct SnapRecord:
    # one entry on disk, 48 bytes
    uint64_t digest[4]
    double expires          # wall-clock seconds since the epoch; +inf: never
    uint32_t group
    uint32_t flags          # 0


cdef struct SnapGroup:
    # one dimension on disk, 32 bytes
    uint64_t dim
    uint64_t count
    uint64_t checksum       # of the group's block of vectors
    uint64_t reserved       # 0


cdef struct SaveItem:
    SnapRecord rec          # rec.expires holds the cache clock until written
    uint64_t hash
    int32_t slab
    int32_t kept


cdef struct Writer:
    int fd
    char *buf
    size_t cap
    size_t fill
    uint64_t written        # bytes flushed to the file
    int error               # errno of the first failed write, else 0


cdef struct ExpiryRank:
    double expires
    Py_ssize_t rank
    slot_t slot


class _SnapshotFormatError(Exception):
    """Internal: a malformed snapshot, re-raised as SnapshotError naming the file."""


cdef inline uint64_t bytes_checksum(const unsigned char *p, size_t n, uint64_t seed) noexcept nogil:
    return embcache_mix64(p, n, seed)


def snapshot_checksum(data, uint64_t seed=0) -> int:
    """The snapshot checksum (mix64 v1, _checksum.h) of a bytes-like object."""
    cdef const unsigned char[::1] view = memoryview(data).cast("B")
    cdef size_t n = view.shape[0]
    if n == 0:
        return embcache_mix64(NULL, 0, seed)
    return embcache_mix64(&view[0], n, seed)


# --- file helpers (no GIL) -----------------------------------------------------------

cdef int write_all(int fd, const char *p, size_t n) noexcept nogil:
    """Write all `n` bytes; 0, or the errno of the failure."""
    cdef ssize_t w
    while n:
        w = write(fd, p, n if n < 1073741824 else 1073741824)
        if w < 0:
            if errno == EINTR:
                continue
            return errno
        p += w
        n -= <size_t>w
    return 0


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


cdef void writer_flush(Writer *w) noexcept nogil:
    if w.fill and not w.error:
        w.error = write_all(w.fd, w.buf, w.fill)
        w.written += w.fill
    w.fill = 0


cdef void writer_put(Writer *w, const void *data, size_t n, embcache_mix_state *mix) noexcept nogil:
    """Append `n` bytes (absorbed into `mix` when given)."""
    cdef const char *p = <const char *>data
    cdef size_t take
    if mix != NULL:
        embcache_mix_update(mix, p, n)
    while n:
        if w.fill == w.cap:
            writer_flush(w)
        take = w.cap - w.fill
        if take > n:
            take = n
        memcpy(w.buf + w.fill, p, take)
        w.fill += take
        p += take
        n -= take


cdef object snapshot_path(object path, str what):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ArgumentTypeError(f"{what}: path must be a str, bytes or os.PathLike, got "
                                f"{type(path).__name__}")
    path = os.fspath(path)
    if len(path) == 0:
        raise ArgumentValueError(f"{what}: path is empty")
    return path


# --- save ----------------------------------------------------------------------------

cdef slot_t gather_entries(const Table *t, double now, SaveItem *items) noexcept nogil:
    """Live entries in the policy's order, the next to go first (least recent
    first under LRU): digest, cache-clock expiry, slab."""
    cdef slot_t s = policy_walk_first(t)
    cdef slot_t n = 0
    cdef const Entry *e
    while s != NO_SLOT:
        e = &t.entries[s]
        if not expired(t, s, now):
            memcpy(items[n].rec.digest, e.digest, sizeof(e.digest))
            items[n].rec.expires = e.expires_at
            items[n].slab = e.slab
            items[n].kept = 0
            n += 1
        s = policy_walk_next(t, s)
    return n


cdef Py_ssize_t copy_rows_out(const Table *t, SaveItem *items, const slot_t *order,
                              Py_ssize_t j, Py_ssize_t end, dim_t dim, Writer *w) noexcept nogil:
    """Copy the rows of items order[j:end] (dimension `dim`) into the write buffer
    while it has room; each entry is looked up again by digest, and one that has
    gone or changed dimension is left out. Returns the next j."""
    cdef size_t row_bytes = <size_t>dim * 4
    cdef KeyId k
    cdef slot_t s
    cdef SaveItem *it
    while j < end and w.cap - w.fill >= row_bytes:
        it = &items[order[j]]
        k.hash = it.hash
        memcpy(k.digest, it.rec.digest, sizeof(k.digest))
        s = find(t, &k)
        if s != NO_SLOT and dim_of(t, s) == dim:
            memcpy(w.buf + w.fill, row_of(t, s), row_bytes)
            w.fill += row_bytes
            it.kept = 1
        j += 1
    return j


cdef object snapshot_save(SyncEmbeddingCache cache, object path):
    target = snapshot_path(path, "save")
    if sys.byteorder != "little":
        raise RuntimeError("snapshots are little-endian; saving on a big-endian host is not supported")
    if os.path.isdir(target):
        raise IsADirectoryError(EISDIR, os.strerror(EISDIR), target)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise FileNotFoundError(ENOENT, f"the folder of the snapshot does not exist", folder)

    cdef Table *t = &cache.table
    cdef SaveItem *items = NULL
    cdef dim_t *slab_dims = NULL
    cdef int32_t *slab_group = NULL       # slab -> group (first its entry count)
    cdef int32_t *final_id = NULL         # group -> its number in the file (empty ones dropped)
    cdef Py_ssize_t *group_start = NULL
    cdef dim_t *group_dim = NULL
    cdef uint64_t *group_sum = NULL
    cdef uint64_t *group_kept = NULL
    cdef slot_t *order = NULL
    cdef Writer w
    memset(&w, 0, sizeof(Writer))
    w.fd = -1
    cdef slot_t n = 0, i
    cdef int32_t n_slabs = 0, n_groups = 0, g, final_groups = 0
    cdef Py_ssize_t j, end, before
    cdef size_t row_bytes, max_row = 0
    cdef double now, ttl
    cdef bint ok
    cdef embcache_mix_state mix
    cdef SnapRecord rec
    cdef SnapGroup grp
    cdef uint64_t sum_value, blocks_bytes = 0, entries_offset, groups_offset, file_bytes
    cdef slot_t kept = 0
    fd = -1
    tmp = None

    # 1. under the lock: the recency order, digests and expiries (no vectors)
    cdef double given = cache.now_unlocked()
    cdef double saved_at = time.time()
    embcache_lock_acquire(&cache.lock)
    now = cache.now_locked(given)
    n_slabs = t.n_slabs
    items = <SaveItem *>malloc((<size_t>t.size + 1) * sizeof(SaveItem))
    slab_dims = <dim_t *>malloc((<size_t>n_slabs + 1) * sizeof(dim_t))
    ok = items != NULL and slab_dims != NULL
    if ok:
        n = gather_entries(t, now, items)
        for g in range(n_slabs):
            slab_dims[g] = t.slabs[g].dim
    ttl = t.ttl_seconds
    embcache_lock_release(&cache.lock)
    try:
        if not ok:
            raise MemoryError("not enough memory to list the entries to save")
        # 2. without the lock: index hashes, groups (one per dimension), rows by group
        slab_group = <int32_t *>calloc(<size_t>n_slabs + 1, sizeof(int32_t))
        group_start = <Py_ssize_t *>calloc(<size_t>n_slabs + 2, sizeof(Py_ssize_t))
        group_dim = <dim_t *>calloc(<size_t>n_slabs + 1, sizeof(dim_t))
        group_sum = <uint64_t *>calloc(<size_t>n_slabs + 1, sizeof(uint64_t))
        group_kept = <uint64_t *>calloc(<size_t>n_slabs + 1, sizeof(uint64_t))
        order = <slot_t *>malloc((<size_t>n + 1) * sizeof(slot_t))
        final_id = <int32_t *>calloc(<size_t>n_slabs + 1, sizeof(int32_t))
        if (final_id == NULL or slab_group == NULL or group_start == NULL or group_dim == NULL or group_sum == NULL
                or group_kept == NULL or order == NULL):
            raise MemoryError("not enough memory to plan the snapshot")
        with nogil:
            for i in range(n):
                items[i].hash = digest_hash(items[i].rec.digest)
                slab_group[items[i].slab] += 1
            for g in range(n_slabs):
                if slab_group[g]:
                    group_dim[n_groups] = slab_dims[g]
                    group_start[n_groups + 1] = slab_group[g]
                    slab_group[g] = n_groups
                    n_groups += 1
                    if <size_t>slab_dims[g] * 4 > max_row:
                        max_row = <size_t>slab_dims[g] * 4
                else:
                    slab_group[g] = -1
            for g in range(n_groups):
                group_start[g + 1] += group_start[g]
            # group_kept doubles as each group's fill cursor here
            for i in range(n):
                g = slab_group[items[i].slab]
                items[i].rec.group = <uint32_t>g
                order[group_start[g] + <Py_ssize_t>group_kept[g]] = i
                group_kept[g] += 1
            memset(group_kept, 0, (<size_t>n_slabs + 1) * sizeof(uint64_t))

        w.cap = max(<size_t>SNAP_IO_BYTES, max_row)
        w.buf = <char *>malloc(w.cap)
        if w.buf == NULL:
            raise MemoryError("not enough memory for the snapshot's write buffer")

        # 3. the file: a fresh temporary in the same folder
        base = os.path.basename(target)
        tmp = os.path.join(folder, (b"." if isinstance(base, bytes) else ".") + base
                           + (f".{os.getpid()}.{os.urandom(4).hex()}.tmp".encode()
                              if isinstance(base, bytes)
                              else f".{os.getpid()}.{os.urandom(4).hex()}.tmp"))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o644)
        w.fd = fd
        memset(w.buf, 0, SNAP_HEADER_BYTES)     # the header is written last
        w.fill = SNAP_HEADER_BYTES

        # vectors: one block per group, rows copied under the lock ~4 MiB at a time
        for g in range(n_groups):
            row_bytes = <size_t>group_dim[g] * 4
            embcache_mix_init(&mix, SNAP_SEED_BLOCK + final_groups)
            j = group_start[g]
            end = group_start[g + 1]
            while j < end:
                if w.cap - w.fill < row_bytes:
                    with nogil:
                        writer_flush(&w)
                    if w.error:
                        break
                before = w.fill
                embcache_lock_acquire(&cache.lock)
                with nogil:
                    j = copy_rows_out(t, items, order, j, end, group_dim[g], &w)
                embcache_lock_release(&cache.lock)
                with nogil:
                    embcache_mix_update(&mix, w.buf + before, w.fill - before)
                group_kept[g] += (w.fill - before) // row_bytes
            if w.error:
                break
            group_sum[g] = embcache_mix_final(&mix)
            blocks_bytes += group_kept[g] * row_bytes
            final_id[g] = final_groups            # the group's number in the file
            if group_kept[g]:
                final_groups += 1
        if w.error:
            raise OSError(w.error, os.strerror(w.error), tmp)

        # entries, least recent first, then the groups
        with nogil:
            embcache_mix_init(&mix, SNAP_SEED_ENTRIES)
            for i in range(n):
                if not items[i].kept:
                    continue
                rec = items[i].rec
                rec.expires = saved_at + (rec.expires - now) if ttl > 0 else INFINITY
                rec.group = <uint32_t>final_id[rec.group]
                rec.flags = 0
                writer_put(&w, &rec, sizeof(SnapRecord), &mix)
                kept += 1
            sum_value = embcache_mix_final(&mix)
            writer_put(&w, &sum_value, 8, NULL)
            embcache_mix_init(&mix, SNAP_SEED_GROUPS)
            for g in range(n_groups):
                if group_kept[g] == 0:
                    continue
                grp.dim = <uint64_t>group_dim[g]
                grp.count = group_kept[g]
                grp.checksum = group_sum[g]
                grp.reserved = 0
                writer_put(&w, &grp, sizeof(SnapGroup), &mix)
            sum_value = embcache_mix_final(&mix)
            writer_put(&w, &sum_value, 8, NULL)
            writer_flush(&w)
        if w.error:
            raise OSError(w.error, os.strerror(w.error), tmp)

        entries_offset = SNAP_HEADER_BYTES + blocks_bytes
        groups_offset = entries_offset + <uint64_t>kept * sizeof(SnapRecord) + 8
        file_bytes = groups_offset + <uint64_t>final_groups * sizeof(SnapGroup) + 8
        if file_bytes != w.written:
            raise AssertionError(f"snapshot writer: {w.written} bytes written, {file_bytes} planned")
        head = SNAPSHOT_HEADER.pack(
            SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SNAPSHOT_BYTE_ORDER, SNAP_HEADER_BYTES,
            SNAPSHOT_DIGEST_SCHEME, SNAPSHOT_CHECKSUM_SCHEME, final_groups,
            kept, t.dim, t.max_entries, float(cache.max_memory_mb_arg),
            0.0 if cache.ttl_seconds_arg is None else float(cache.ttl_seconds_arg), saved_at,
            file_bytes, entries_offset, groups_offset, 0, 0)
        head += snapshot_checksum(head, SNAP_SEED_HEADER).to_bytes(8, "little")
        if os.pwrite(fd, head, 0) != SNAP_HEADER_BYTES:
            raise OSError(EIO, "short write of the snapshot header", tmp)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
        tmp = None
        fsync_folder(folder)
        return kept
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        free(items)
        free(slab_dims)
        free(slab_group)
        free(group_start)
        free(group_dim)
        free(group_sum)
        free(group_kept)
        free(order)
        free(final_id)
        free(w.buf)


cdef object fsync_folder(object folder):
    """Make the rename durable: fsync the folder (where the OS allows it)."""
    try:
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        os.fsync(dfd)
    except OSError:
        pass      # some filesystems do not fsync folders; the data itself is synced
    finally:
        os.close(dfd)
    return None


# --- load ----------------------------------------------------------------------------

cdef int compare_expiry(const void *a, const void *b) noexcept nogil:
    cdef const ExpiryRank *x = <const ExpiryRank *>a
    cdef const ExpiryRank *y = <const ExpiryRank *>b
    if x.expires < y.expires:
        return -1
    if x.expires > y.expires:
        return 1
    return -1 if x.rank < y.rank else (1 if x.rank > y.rank else 0)


cdef int compare_dims(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t *>a)[0]
    cdef uint64_t y = (<const uint64_t *>b)[0]
    return -1 if x < y else (1 if x > y else 0)


cdef object check_groups(const SnapGroup *groups, uint32_t n_groups, uint64_t n_entries,
                         uint64_t file_bytes, uint64_t fixed_dim, uint64_t *blocks_bytes):
    """The groups section against the header and the file size; the message of the
    first problem, or None. Sets blocks_bytes (the vectors' total)."""
    cdef uint32_t g
    cdef uint64_t total = 0, entries = 0, row_bytes
    cdef uint64_t *dims
    cdef uint64_t repeated
    for g in range(n_groups):
        if groups[g].dim < 1 or groups[g].dim > SNAP_MAX_DIM:
            return f"group {g} records dim {groups[g].dim}, outside 1..2**40"
        if groups[g].count < 1 or groups[g].count > n_entries:
            return f"group {g} records {groups[g].count} vectors of {n_entries} entries"
        if groups[g].reserved != 0:
            return f"group {g} has a non-zero reserved field"
        if fixed_dim and groups[g].dim != fixed_dim:
            return f"group {g} holds dim {groups[g].dim} in a snapshot of fixed dim {fixed_dim}"
        row_bytes = groups[g].dim * 4
        if row_bytes > file_bytes or groups[g].count > file_bytes // row_bytes:
            return (f"group {g} records {groups[g].count} vectors of dim {groups[g].dim}, "
                    f"more than the {file_bytes}-byte file can hold")
        total += groups[g].count * row_bytes
        if total > file_bytes:
            return f"the vector blocks add up to more than the {file_bytes}-byte file"
        entries += groups[g].count
    if entries != n_entries:
        return f"the groups hold {entries} vectors, the header {n_entries} entries"
    if fixed_dim and n_groups > 1:
        return f"{n_groups} groups in a snapshot of fixed dim {fixed_dim}"
    dims = <uint64_t *>malloc((<size_t>n_groups + 1) * sizeof(uint64_t))
    if dims == NULL:
        raise MemoryError()
    for g in range(n_groups):
        dims[g] = groups[g].dim
    qsort(dims, n_groups, sizeof(uint64_t), compare_dims)
    for g in range(1, n_groups):
        if dims[g] == dims[g - 1]:
            repeated = dims[g]      # read before the free: the message needs it
            free(dims)
            return f"two groups record the same dim {repeated}"
    free(dims)
    blocks_bytes[0] = total
    return None


cdef Py_ssize_t check_records(const SnapRecord *recs, uint64_t n, const SnapGroup *groups,
                              uint32_t n_groups, uint64_t *seen) noexcept nogil:
    """Index of the first malformed record (bad group, flags, NaN expiry, or a
    group count that does not match), or -1. `seen`: n_groups zeroed counters."""
    cdef uint64_t i
    cdef uint32_t g
    for i in range(n):
        if recs[i].group >= n_groups or recs[i].flags != 0 or isnan(recs[i].expires):
            return <Py_ssize_t>i
        seen[recs[i].group] += 1
    for g in range(n_groups):
        if seen[g] != groups[g].count:
            return <Py_ssize_t>n
    return -1


cdef Py_ssize_t choose_entries(const Table *t, const SnapRecord *recs, Py_ssize_t n,
                               const SnapGroup *groups, double wall_now, double now,
                               unsigned char *keep, double *expires, uint64_t *kept) noexcept nogil:
    """Which entries the new cache keeps: walking from the most recent, those not
    expired on the wall clock, until the next one no longer fits the entry or the
    memory bound (one larger than the whole budget is passed over). Their
    cache-clock expiry goes to `expires` (a remaining TTL longer than the cache's
    own is cut to it); per-group counts to `kept`. Returns how many are kept."""
    cdef Py_ssize_t i, count = 0
    cdef Py_ssize_t used = 0, need
    cdef double remaining
    for i in range(n - 1, -1, -1):
        if recs[i].expires <= wall_now:
            continue
        need = entry_bytes(<dim_t>groups[recs[i].group].dim)
        if need > t.memory_budget_bytes:
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


cdef Py_ssize_t store_block_rows(Table *t, const SnapRecord *recs, const unsigned char *keep,
                                 const Py_ssize_t *order, Py_ssize_t j, Py_ssize_t rows,
                                 const char *buf, dim_t dim, int32_t slab_index,
                                 double now) noexcept nogil:
    """Store the kept ones of `rows` rows read into `buf` (entries order[j:j+rows])."""
    cdef Source src
    cdef KeyId k
    cdef Py_ssize_t r, i
    src.n = dim
    src.stride = 4
    src.is_f64 = False
    for r in range(rows):
        i = order[j + r]
        if keep[i]:
            memcpy(k.digest, recs[i].digest, sizeof(k.digest))
            k.hash = digest_hash(k.digest)
            src.data = buf + <size_t>r * <size_t>dim * 4
            store(t, &k, &src, slab_index, now)
    return j + rows


cdef int finish_load(Table *t, const SnapRecord *recs, Py_ssize_t n,
                     const unsigned char *keep, const double *expires, bint reorder,
                     ExpiryRank *ranks) noexcept nogil:
    """Give the stored entries their expiries, the saved recency order (when the
    blocks were stored group by group) and an expiry list in expiry order; stats
    start at zero. 1 if an entry is missing (cannot happen after the size check)."""
    cdef Py_ssize_t i, m = 0
    cdef KeyId k
    cdef slot_t s
    for i in range(n):
        if not keep[i]:
            continue
        memcpy(k.digest, recs[i].digest, sizeof(k.digest))
        k.hash = digest_hash(k.digest)
        s = find(t, &k)
        if s == NO_SLOT:
            return 1
        t.entries[s].expires_at = expires[i]
        if reorder:
            policy_on_hit(t, s)          # least recent first: each becomes most recent
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


cdef object load_limit(object given, object recorded):
    return recorded if given is UNSET else given


cdef SyncEmbeddingCache snapshot_load(object path, object max_entries, object ttl_seconds,
                                      object max_memory_mb, object dim, object clock,
                                      object policy):
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
                           policy)
        except _SnapshotFormatError as exc:
            raise SnapshotError(f"cannot load snapshot {source!r}: {exc}") from None
    finally:
        os.close(fd)


cdef SyncEmbeddingCache load_fd(int fd, uint64_t size, object max_entries_arg, object ttl_arg,
                                object mb_arg, object dim_arg, object clock, object policy):
    bad = _SnapshotFormatError
    if size == 0:
        raise bad("the file is empty")
    if size < SNAP_HEADER_BYTES:
        raise bad(f"the file is {size} bytes, shorter than the {SNAP_HEADER_BYTES}-byte header "
                  "(truncated, or not a snapshot)")
    head = read_section(fd, 0, SNAP_HEADER_BYTES, "header")
    (magic, version, byte_order, header_bytes, digest_scheme, checksum_scheme, n_groups_,
     n_entries_, fixed_dim_, max_entries_rec, mb_rec, ttl_rec, saved_at, file_bytes,
     entries_offset_, groups_offset_, flags, reserved) = SNAPSHOT_HEADER.unpack_from(head)
    if magic != SNAPSHOT_MAGIC:
        raise bad(f"not an embcache snapshot (it starts with {head[:8]!r}, not {SNAPSHOT_MAGIC!r})")
    if byte_order != SNAPSHOT_BYTE_ORDER:
        if byte_order == 0x04030201:
            raise bad("it was written in big-endian byte order; this embcache reads "
                      "little-endian snapshots")
        raise bad(f"its byte-order mark is {byte_order:#010x}, not 0x01020304 (corrupt header)")
    if version != SNAPSHOT_VERSION:
        raise bad(f"it is format version {version}; this embcache reads version "
                  f"{SNAPSHOT_VERSION}")
    if snapshot_checksum(head[:SNAP_HEADER_SUMMED], SNAP_SEED_HEADER) != int.from_bytes(
            head[SNAP_HEADER_SUMMED:], "little"):
        raise bad("the header fails its checksum (corrupt header)")
    if header_bytes != SNAP_HEADER_BYTES or flags != 0 or reserved != 0:
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

    cdef uint64_t n_entries = n_entries_
    cdef uint32_t n_groups = n_groups_
    cdef uint64_t fixed_dim = fixed_dim_
    cdef uint64_t entries_offset = entries_offset_, groups_offset = groups_offset_
    cdef uint64_t blocks_bytes = 0
    # every count against the file's size before any is used
    if n_entries > (size - SNAP_HEADER_BYTES) // sizeof(SnapRecord):
        raise bad(f"the header records {n_entries} entries, more than the {size}-byte file holds")
    if n_groups > n_entries or n_groups > (size - SNAP_HEADER_BYTES) // sizeof(SnapGroup):
        raise bad(f"the header records {n_groups} dimension groups for {n_entries} entries")
    if groups_offset > size or size - groups_offset != <uint64_t>n_groups * sizeof(SnapGroup) + 8:
        raise bad(f"the groups section does not end the file (offset {groups_offset}, "
                  f"{n_groups} groups, {size} bytes)")
    if (entries_offset < SNAP_HEADER_BYTES or entries_offset > groups_offset
            or groups_offset - entries_offset != n_entries * sizeof(SnapRecord) + 8):
        raise bad(f"the entries section (offset {entries_offset}, {n_entries} entries) does not "
                  f"end where the groups section starts ({groups_offset})")

    groups_data = read_section(fd, groups_offset, size - groups_offset, "groups")
    cdef const unsigned char *gp = <const unsigned char *>(<char *>groups_data)
    cdef uint64_t gsum
    memcpy(&gsum, gp + <size_t>n_groups * sizeof(SnapGroup), 8)
    if bytes_checksum(gp, <size_t>n_groups * sizeof(SnapGroup), SNAP_SEED_GROUPS) != gsum:
        raise bad("the groups section fails its checksum (corrupt)")
    cdef const SnapGroup *groups = <const SnapGroup *>gp
    problem = check_groups(groups, n_groups, n_entries, size, fixed_dim, &blocks_bytes)
    if problem is not None:
        raise bad(problem)
    if entries_offset != SNAP_HEADER_BYTES + blocks_bytes:
        raise bad(f"the vector blocks ({blocks_bytes} bytes) do not end where the entries section "
                  f"starts ({entries_offset})")

    # limits: given, else recorded; the cache is built only from here on
    me = load_limit(max_entries_arg, max_entries_rec)
    ttl = load_limit(ttl_arg, None if ttl_rec == 0 else ttl_rec)
    mb = load_limit(mb_arg, mb_rec)
    dim_ = load_limit(dim_arg, fixed_dim_ or None)

    cdef SnapRecord *recs = NULL
    cdef unsigned char *keep = NULL
    cdef double *expires = NULL
    cdef Py_ssize_t *order = NULL
    cdef uint64_t *counts = NULL
    cdef uint64_t *kept = NULL
    cdef int32_t *slab_index = NULL
    cdef ExpiryRank *ranks = NULL
    cdef char *buf = NULL
    cdef Py_ssize_t n = <Py_ssize_t>n_entries, i, j, bad_record, rows, n_kept = 0
    cdef uint32_t g
    cdef uint64_t esum, offset, pos, block, want, row_bytes
    cdef Py_ssize_t got_entries
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
    cdef bint ok = False
    try:
        recs = <SnapRecord *>malloc(<size_t>n_entries * sizeof(SnapRecord) + 8)
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
        with nogil:
            got_entries = read_at(fd, <char *>recs, <size_t>n_entries * sizeof(SnapRecord) + 8,
                                  entries_offset)
            if got_entries == <Py_ssize_t>(n_entries * sizeof(SnapRecord) + 8):
                memcpy(&esum, (<char *>recs) + n_entries * sizeof(SnapRecord), 8)
                ok = bytes_checksum(<const unsigned char *>recs,
                                        <size_t>n_entries * sizeof(SnapRecord),
                                        SNAP_SEED_ENTRIES) == esum
        if got_entries < 0:
            raise OSError(-got_entries, os.strerror(-got_entries))
        if got_entries != <Py_ssize_t>(n_entries * sizeof(SnapRecord) + 8):
            raise bad("the file ended inside the entries section (it shrank while being read)")
        if not ok:
            raise bad("the entries section fails its checksum (corrupt)")
        bad_record = check_records(recs, n_entries, groups, n_groups, counts)
        if bad_record == n:
            raise bad("the entries' groups do not match the groups' counts")
        if bad_record >= 0:
            raise bad(f"entry {bad_record} is malformed (group {recs[bad_record].group} of "
                      f"{n_groups}, flags {recs[bad_record].flags}, expiry "
                      f"{recs[bad_record].expires!r})")

        # everything but the vectors' checksums has passed: build the cache
        cache = SyncEmbeddingCache(me, ttl, mb, dim=dim_, clock=clock, policy=policy)
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
        offset = SNAP_HEADER_BYTES
        j = 0
        cap = SNAP_IO_BYTES
        for g in range(n_groups):
            row_bytes = groups[g].dim * 4
            if row_bytes > cap:
                cap = row_bytes
        buf = <char *>malloc(2 * cap)
        if buf == NULL:
            raise MemoryError("not enough memory for the snapshot's read buffers")
        posix_fadvise(fd, SNAP_HEADER_BYTES, <off_t>blocks_bytes, POSIX_FADV_SEQUENTIAL)
        for g in range(n_groups):
            row_bytes = groups[g].dim * 4
            block = groups[g].count * row_bytes
            embcache_mix_init(&mix, SNAP_SEED_BLOCK + g)
            # a reader thread reads and checks one buffer while this one is stored
            failed = embcache_reader_start(&reader, fd, offset, block,
                                           (cap // row_bytes) * row_bytes, buf, buf + cap, &mix)
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
                    if kept[g]:
                        embcache_lock_acquire(&cache.lock)
                        with nogil:
                            store_block_rows(t, recs, keep, order, j, rows, chunk,
                                             <dim_t>groups[g].dim, slab_index[g], now)
                        embcache_lock_release(&cache.lock)
                    with nogil:
                        embcache_reader_release(&reader)
                    j += rows
                    pos += <uint64_t>got
            finally:
                with nogil:
                    embcache_reader_stop(&reader)
            if embcache_mix_final(&mix) != groups[g].checksum:
                raise bad(f"the block of vectors of dim {groups[g].dim} fails its checksum "
                          "(corrupt)")
            offset += block
        if t.size != n_kept:
            raise bad(f"{n_kept - t.size} entries repeat another entry's key digest")
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
