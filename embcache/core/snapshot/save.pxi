# Snapshots, saving (the format: core/snapshot/format.pxi).
#
# Saving holds the cache lock only in short steps: one walk of the recency list
# copying digests and expiries (no vectors), then one lock per ~4 MiB of rows
# copied into the write buffer, each row looked up again by digest (an entry
# removed or rewritten meanwhile is left out or saved with its new vector).
# Checksums and writes run without the lock and without the GIL: a writer thread
# (core/snapshot/writer.h) writes one buffer while this thread fills and checksums the
# other, and starts each buffer's writeback at once, so the disk works while the
# file is produced and the final fsync waits only for the last of it.


cdef struct SaveItem:
    SnapRecord rec          # rec.expires holds the cache clock until written
    uint64_t hash
    int32_t slab
    int32_t kept


cdef struct Writer:
    embcache_writer pipe    # the writer thread (core/snapshot/writer.h)
    char *bufs              # its two buffers, cap bytes each
    char *buf               # the one being filled
    size_t cap
    size_t fill
    uint64_t written        # bytes handed to the writer thread
    int error               # errno of the first failed write, else 0


cdef void writer_flush(Writer *w) noexcept nogil:
    """Hand the filled buffer to the writer thread and take the other one."""
    cdef int err
    if w.fill and not w.error:
        err = embcache_writer_submit(&w.pipe, w.fill)
        if err:
            w.error = err
        else:
            w.written += w.fill
            w.buf = embcache_writer_buffer(&w.pipe)
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
    while it has room, as the cache holds them (in its storage's encoding); each
    entry is looked up again by digest, and one that has gone or changed
    dimension is left out. Returns the next j."""
    cdef size_t row_bytes = embcache_row_bytes(t.storage, <size_t>dim)
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
    target, folder = save_target(target)

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
    cdef slot_t n = 0, i
    cdef int32_t n_slabs = 0, n_groups = 0, g, final_groups = 0
    cdef Py_ssize_t j, end, before
    cdef size_t row_bytes, max_row = 0
    cdef double now, ttl
    cdef bint ok
    cdef int err = 0
    cdef embcache_mix_state mix
    cdef SnapRecord rec
    cdef SnapGroup grp
    cdef uint64_t blocks_bytes = 0, entries_offset, groups_offset, file_bytes
    cdef uint64_t entries_sum, groups_sum
    cdef uint64_t file_id = new_file_id()
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
                    if embcache_row_bytes(t.storage, <size_t>slab_dims[g]) > max_row:
                        max_row = embcache_row_bytes(t.storage, <size_t>slab_dims[g])
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
        w.bufs = <char *>malloc(2 * w.cap)
        if w.bufs == NULL:
            raise MemoryError("not enough memory for the snapshot's write buffers")

        # 3. the file: a fresh temporary in the same folder
        tmp = temporary_path(folder, os.path.basename(target))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o644)
        err = embcache_writer_start(&w.pipe, fd, w.bufs, w.bufs + w.cap)
        if err:
            raise OSError(err, f"cannot start the snapshot writer: {os.strerror(err)}")
        w.buf = embcache_writer_buffer(&w.pipe)
        memset(w.buf, 0, SNAP_HEADER_BYTES)     # the header is written last
        w.fill = SNAP_HEADER_BYTES

        # vectors: one block per group, rows copied under the lock ~4 MiB at a time
        for g in range(n_groups):
            row_bytes = embcache_row_bytes(t.storage, <size_t>group_dim[g])
            embcache_mix_init(&mix, section_seed(file_id, SNAP_SEED_BLOCK + final_groups))
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
            embcache_mix_init(&mix, section_seed(file_id, SNAP_SEED_ENTRIES))
            for i in range(n):
                if not items[i].kept:
                    continue
                rec = items[i].rec
                rec.expires = saved_at + (rec.expires - now) if ttl > 0 else INFINITY
                rec.group = <uint32_t>final_id[rec.group]
                rec.flags = 0
                writer_put(&w, &rec, sizeof(SnapRecord), &mix)
                kept += 1
            writer_put(&w, &file_id, 8, &mix)
            entries_sum = embcache_mix_final(&mix)
            writer_put(&w, &entries_sum, 8, NULL)
            embcache_mix_init(&mix, section_seed(file_id, SNAP_SEED_GROUPS))
            for g in range(n_groups):
                if group_kept[g] == 0:
                    continue
                grp.dim = <uint64_t>group_dim[g]
                grp.count = group_kept[g]
                grp.checksum = group_sum[g]
                grp.reserved = 0
                writer_put(&w, &grp, sizeof(SnapGroup), &mix)
            writer_put(&w, &file_id, 8, &mix)
            groups_sum = embcache_mix_final(&mix)
            writer_put(&w, &groups_sum, 8, NULL)
            writer_flush(&w)
            err = embcache_writer_finish(&w.pipe)
        if w.error or err:
            err = w.error or err
            raise OSError(err, os.strerror(err), tmp)

        entries_offset = SNAP_HEADER_BYTES + blocks_bytes
        groups_offset = entries_offset + <uint64_t>kept * sizeof(SnapRecord) + SNAP_TRAILER_BYTES
        file_bytes = groups_offset + <uint64_t>final_groups * sizeof(SnapGroup) + SNAP_TRAILER_BYTES
        if file_bytes != w.written:
            raise AssertionError(f"snapshot writer: {w.written} bytes written, {file_bytes} planned")
        head = SNAPSHOT_HEADER.pack(
            SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SNAPSHOT_BYTE_ORDER, SNAP_HEADER_BYTES,
            SNAPSHOT_DIGEST_SCHEME, SNAPSHOT_CHECKSUM_SCHEME, final_groups,
            kept, t.dim, t.max_entries, float(cache.max_memory_mb_arg),
            0.0 if cache.ttl_seconds_arg is None else float(cache.ttl_seconds_arg), saved_at,
            file_bytes, entries_offset, groups_offset, 0, 0, file_id, entries_sum, groups_sum,
            t.storage)
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
        with nogil:
            embcache_writer_stop(&w.pipe)      # joined before its file and buffers go
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
        free(w.bufs)


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


cdef uint64_t new_file_id() except? 0:
    """A save's file id: 64 random bits, never 0."""
    cdef uint64_t file_id = 0
    while file_id == 0:
        file_id = int.from_bytes(os.urandom(8), "little")
    return file_id


cdef tuple save_target(object target):
    """The file a save replaces and its folder. A symbolic link is followed (the
    file it names is replaced, the link kept); a folder, a missing folder or a
    "folder" that is a file are refused before anything is written."""
    if os.path.islink(target):
        target = os.path.realpath(target)
        if os.path.islink(target):
            raise OSError(ELOOP, os.strerror(ELOOP), target)
    if os.path.isdir(target):
        raise IsADirectoryError(EISDIR, os.strerror(EISDIR), target)
    folder = os.path.dirname(os.path.abspath(target))
    try:
        is_folder = stat.S_ISDIR(os.stat(folder).st_mode)
    except FileNotFoundError:
        raise FileNotFoundError(ENOENT, "the folder of the snapshot does not exist",
                                folder) from None
    except NotADirectoryError:
        is_folder = False  # a file stands where a folder of the path should be
    if not is_folder:
        raise SnapshotFolderError(
            ENOTDIR, "the folder of the snapshot does not exist (a file stands at its path "
            "or on it)", folder)
    return target, folder


cdef object temporary_path(object folder, object base):
    """A fresh name in `folder` for the file a save writes before renaming it over
    `base`: ".BASE.<pid>.<random>.tmp", BASE cut (on a character boundary) so the
    name fits the folder's limit on a name's bytes whatever the length of `base`."""
    as_bytes = isinstance(base, bytes)
    name = os.fsencode(base)
    suffix = f".{os.getpid()}.{os.urandom(4).hex()}.tmp".encode()
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if name_max <= 0:
        name_max = 255
    room = max(0, name_max - 1 - len(suffix))
    if len(name) > room:
        name = name[:room]
        for _ in range(3):        # never end inside a UTF-8 sequence
            try:
                name.decode("utf-8")
                break
            except UnicodeDecodeError:
                name = name[:len(name) - 1]
    tmp = os.path.join(os.fsencode(folder), b"." + name + suffix)
    return tmp if as_bytes else os.fsdecode(tmp)
