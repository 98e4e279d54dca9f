# Snapshots of a segment, in the core's snapshot format (docs/formats.md; the
# sizes, seeds, records, header layout, checksum and the checks of a file's
# header, groups and entries are the core's, cimported from _core.pxd), so a file
# saved by SyncEmbeddingCache loads into a segment and the other way round.
# Included by _segment.pyx at module level.
#
# Saving: each stripe in turn is locked while its live entries' digests and
# expiries are listed in CLOCK's eviction order (the hand onwards, clear
# reference bits before set ones: least recent first as far as CLOCK knows);
# the stripes' lists are merged by their relative place. The rows are then
# copied one at a time, each under its stripe's lock (an entry gone meanwhile is
# left out), into a buffer that is checksummed and written with no lock and no
# GIL held. One group (the segment's dim), the segment's storage.
#
# Loading reads and checks the whole file (every checksum, each row finite and
# storable in the segment's storage, no digest twice) before it opens or
# touches the segment; the rows are kept in memory meanwhile.

from libc.errno cimport EINTR, EIO, EISDIR
from libc.errno cimport errno as c_errno
from libc.stdlib cimport qsort, realloc
from libc.string cimport memcmp
from posix.types cimport off_t
from posix.unistd cimport pread, write

from embcache._core cimport (
    SNAP_HEADER_BYTES,
    SNAP_SEED_BLOCK,
    SNAP_SEED_ENTRIES,
    SNAP_SEED_GROUPS,
    SNAP_SEED_HEADER,
    SnapGroup,
    SnapLayout,
    SnapRecord,
    embcache_f32_all_finite,
    embcache_mix_final,
    embcache_mix_init,
    embcache_mix_state,
    embcache_mix_update,
    section_seed,
    snapshot_entries,
    snapshot_meta,
)

import time

import embcache._core    # its SNAPSHOT_* constants and snapshot_checksum: the format's own
from embcache.errors import SnapshotError

cdef size_t SNAP_BUFFER_BYTES = 4 << 20   # rows are written this many bytes at a time


cdef struct SaveItem:
    uint64_t digest[4]
    double expires          # CLOCK_MONOTONIC seconds (+inf: no TTL)
    double rank             # place in its stripe's CLOCK order, in (0, 1)
    uint32_t stripe


cdef Py_ssize_t list_stripe(const embc_seg *g, uint32_t s, double now, SaveItem *out) noexcept nogil:
    """The live, unexpired entries of stripe `s` (locked) in CLOCK's eviction
    order into `out` (room for the stripe's slots); how many."""
    cdef embc_entry *ents = embc_entries(g, s)
    cdef uint32_t slots = embc_slots(g, s), hand = embc_stripe_at(g, s).hand, k, i
    cdef Py_ssize_t n = 0, j
    cdef int pass_
    for pass_ in range(2):
        for k in range(slots):
            i = (hand + k) % slots
            if ents[i].state != EMBC_LIVE or ents[i].expires_at <= now:
                continue
            if (ents[i].ref != 0) != (pass_ == 1):
                continue
            memcpy(out[n].digest, ents[i].digest, 32)
            out[n].expires = ents[i].expires_at
            out[n].stripe = s
            n += 1
    for j in range(n):
        out[j].rank = (j + 0.5) / n
    return n


cdef int compare_rank(const void *a, const void *b) noexcept nogil:
    cdef const SaveItem *x = <const SaveItem *>a
    cdef const SaveItem *y = <const SaveItem *>b
    if x.rank != y.rank:
        return -1 if x.rank < y.rank else 1
    return -1 if x.stripe < y.stripe else (1 if x.stripe > y.stripe else 0)


cdef int write_all(int fd, const char *p, size_t n) noexcept nogil:
    """Write `n` bytes; 0, or the errno of the failure."""
    cdef ssize_t r
    while n:
        r = write(fd, p, n)
        if r < 0:
            if c_errno == EINTR:
                continue
            return c_errno
        p += r
        n -= <size_t>r
    return 0


cdef struct SnapOut:
    int fd
    char *buf
    size_t fill
    int error


cdef void out_flush(SnapOut *o) noexcept nogil:
    if o.fill and not o.error:
        o.error = write_all(o.fd, o.buf, o.fill)
    o.fill = 0


cdef void out_put(SnapOut *o, const void *data, size_t n, embcache_mix_state *mix) noexcept nogil:
    """Append `n` bytes (fewer than the buffer), absorbed into `mix` when given."""
    if mix != NULL:
        embcache_mix_update(mix, data, n)
    if o.fill + n > SNAP_BUFFER_BYTES:
        out_flush(o)
    memcpy(o.buf + o.fill, data, n)
    o.fill += n


cdef object segment_save(SharedEmbeddingCache self, object path):
    """SharedEmbeddingCache.save (its docstring says what it does)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ArgumentTypeError(f"save: path must be a str, bytes or os.PathLike, got "
                                f"{type(path).__name__}")
    target = os.fsdecode(os.fspath(path))
    if not target:
        raise ArgumentValueError("save: path is empty")
    if os.path.isdir(target):
        raise IsADirectoryError(EISDIR, os.strerror(EISDIR), target)
    target = os.path.realpath(target)
    folder = os.path.dirname(target)
    cdef const embc_layout *L = &self.seg.L
    cdef uint32_t s, max_slots = 0
    for s in range(L.n_stripes):
        max_slots = max(max_slots, embc_stripe_cap(L, s) + 1)
    cdef SaveItem *items = NULL
    cdef SaveItem *more
    cdef Py_ssize_t n = 0, m, j, kept = 0, room = 0
    cdef SnapOut o
    o.fd = -1
    o.buf = NULL
    o.fill = 0
    o.error = 0
    cdef unsigned char *keep = NULL
    cdef double now = embc_now()
    cdef double saved_at = time.time()
    cdef double ttl = L.ttl_seconds
    cdef uint64_t h, file_id = 0, entries_sum, groups_sum, block_sum
    cdef const char *row
    cdef embcache_mix_state mix
    cdef SnapRecord rec
    cdef SnapGroup grp
    cdef uint64_t blocks_bytes, entries_offset, groups_offset, file_bytes
    while file_id == 0:
        file_id = int.from_bytes(os.urandom(8), "little")
    tmp = None
    try:
        # 1. each stripe locked in turn: its entries in CLOCK order (no rows)
        for s in range(L.n_stripes):
            if room - n < max_slots:
                room = 2 * room + max_slots
                more = <SaveItem *>realloc(items, <size_t>room * sizeof(SaveItem))
                if more == NULL:
                    raise MemoryError("not enough memory to list the entries to save")
                items = more
            self.lock(s)
            n += list_stripe(&self.seg, s, now, items + n)
            embc_unlock(&self.seg, s)
        keep = <unsigned char *>calloc(<size_t>n + 1, 1)
        o.buf = <char *>malloc(SNAP_BUFFER_BYTES)
        if keep == NULL or o.buf == NULL:
            raise MemoryError("not enough memory for the snapshot's buffers")
        with nogil:
            qsort(items, n, sizeof(SaveItem), compare_rank)
        tmp = os.path.join(folder, f".{os.path.basename(target)}.{os.getpid()}."
                                   f"{secrets.token_hex(4)}.tmp")
        o.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        memset(o.buf, 0, SNAP_HEADER_BYTES)      # the header is written last
        o.fill = SNAP_HEADER_BYTES
        # 2. the rows, least recent first, each copied under its stripe's lock
        embcache_mix_init(&mix, section_seed(file_id, SNAP_SEED_BLOCK))
        for j in range(n):
            if o.fill + L.row_bytes > SNAP_BUFFER_BYTES:
                with nogil:
                    out_flush(&o)
                if o.error:
                    break
            h = embc_hash(&self.seg, items[j].digest)
            s = items[j].stripe
            self.lock(s)
            row = embc_lookup(&self.seg, s, h, items[j].digest, now, 0)
            if row != NULL:
                memcpy(o.buf + o.fill, row, L.row_bytes)
            embc_unlock(&self.seg, s)
            if row != NULL:
                embcache_mix_update(&mix, o.buf + o.fill, L.row_bytes)
                o.fill += L.row_bytes
                keep[j] = 1
                kept += 1
        block_sum = embcache_mix_final(&mix)
        # 3. the entries (wall-clock expiries) and the group
        with nogil:
            embcache_mix_init(&mix, section_seed(file_id, SNAP_SEED_ENTRIES))
            for j in range(n):
                if not keep[j]:
                    continue
                memcpy(rec.digest, items[j].digest, 32)
                rec.expires = saved_at + (items[j].expires - now) if ttl > 0 else INFINITY
                rec.group = 0
                rec.flags = 0
                out_put(&o, &rec, sizeof(SnapRecord), &mix)
            out_put(&o, &file_id, 8, &mix)
            entries_sum = embcache_mix_final(&mix)
            out_put(&o, &entries_sum, 8, NULL)
            embcache_mix_init(&mix, section_seed(file_id, SNAP_SEED_GROUPS))
            if kept:
                grp.dim = L.dim
                grp.count = <uint64_t>kept
                grp.checksum = block_sum
                grp.reserved = 0
                out_put(&o, &grp, sizeof(SnapGroup), &mix)
            out_put(&o, &file_id, 8, &mix)
            groups_sum = embcache_mix_final(&mix)
            out_put(&o, &groups_sum, 8, NULL)
            out_flush(&o)
        if o.error:
            raise OSError(o.error, os.strerror(o.error), tmp)
        blocks_bytes = <uint64_t>kept * L.row_bytes
        entries_offset = SNAP_HEADER_BYTES + blocks_bytes
        groups_offset = entries_offset + <uint64_t>kept * sizeof(SnapRecord) + 16
        file_bytes = groups_offset + (sizeof(SnapGroup) if kept else 0) + 16
        fmt = embcache._core
        head = fmt.SNAPSHOT_HEADER.pack(
            fmt.SNAPSHOT_MAGIC, fmt.SNAPSHOT_VERSION, fmt.SNAPSHOT_BYTE_ORDER, SNAP_HEADER_BYTES,
            fmt.SNAPSHOT_DIGEST_SCHEME, fmt.SNAPSHOT_CHECKSUM_SCHEME, 1 if kept else 0,
            kept, L.dim, L.max_entries, float(L.max_memory_mb), ttl if ttl > 0 else 0.0,
            saved_at, file_bytes, entries_offset, groups_offset, 0, 0, file_id, entries_sum,
            groups_sum, L.storage)
        head += fmt.snapshot_checksum(head, SNAP_SEED_HEADER).to_bytes(8, "little")
        os.pwrite(o.fd, head, 0)
        if os.fstat(o.fd).st_size != file_bytes:
            raise OSError(EIO, "the snapshot's size is not the one planned", tmp)
        os.fsync(o.fd)
        os.close(o.fd)
        o.fd = -1
        os.replace(tmp, target)
        tmp = None
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return kept
    finally:
        if o.fd >= 0:
            os.close(o.fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        free(items)
        free(keep)
        free(o.buf)


cdef int compare_digest(const void *a, const void *b) noexcept nogil:
    return memcmp((<const SnapRecord *>a).digest, (<const SnapRecord *>b).digest, 32)


cdef Py_ssize_t read_full(int fd, char *p, size_t n, uint64_t offset) noexcept nogil:
    """Read `n` bytes at `offset`: n, fewer at the end of the file, or -errno."""
    cdef ssize_t r
    cdef size_t got = 0
    while got < n:
        r = pread(fd, p + got, n - got if n - got < (1 << 30) else (1 << 30), <off_t>(offset + got))
        if r < 0:
            if c_errno == EINTR:
                continue
            return -c_errno
        if r == 0:
            break
        got += <size_t>r
    return <Py_ssize_t>got


cdef Py_ssize_t convert_rows(int from_storage, const char *src, int to_storage, char *dst,
                             size_t dim, Py_ssize_t n, float *floats, Py_ssize_t *col) noexcept nogil:
    """Rows of `from_storage` into rows of `to_storage` (copied as they are when
    the two are the same), each decoded and checked finite and storable first;
    -1, or the first row that is not (col[0]: its bad value's place, -1 for a
    row that decodes to NaN or infinity)."""
    cdef size_t rb_from = embc_row_bytes_of(from_storage, dim)
    cdef size_t rb_to = embc_row_bytes_of(to_storage, dim)
    cdef Py_ssize_t i
    cdef ptrdiff_t bad
    for i in range(n):
        embcache_decode_row(from_storage, src + <size_t>i * rb_from, dim, floats)
        col[0] = -1
        if (from_storage == EMBCACHE_STORE_I8 and (src[<size_t>i * rb_from + 3] & 0x80)) \
                or not embcache_f32_all_finite(floats, dim):
            return i
        if from_storage == to_storage:
            memcpy(dst + <size_t>i * rb_to, src + <size_t>i * rb_from, rb_to)
            continue
        bad = embcache_first_unstorable(to_storage, floats, dim)
        if bad >= 0:
            col[0] = bad
            return i
        embcache_encode_row(to_storage, floats, dim, dst + <size_t>i * rb_to)
    return -1


cdef object segment_load(type cls, object path, object name, object max_entries,
                         object ttl_seconds, object max_memory_mb, object storage, object mode,
                         object label):
    """SharedEmbeddingCache.load (its docstring says what it does)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ArgumentTypeError(f"load: path must be a str, bytes or os.PathLike, got "
                                f"{type(path).__name__}")
    source = os.fspath(path)
    # a bad name or label fails before the file is read
    label = label_of(label, segment_path(name))
    if storage is not UNSET:
        if not isinstance(storage, str):
            raise ArgumentTypeError(f"storage must be a str, got {type(storage).__name__}")
        if storage not in STORAGES:
            raise ArgumentValueError(
                f"storage must be one of {', '.join(map(repr, STORAGES))}, got {storage!r}")
    cdef int fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    cdef SnapLayout F
    cdef SnapRecord *recs = NULL
    cdef uint64_t *counts = NULL
    cdef char *raw = NULL
    cdef char *rows = NULL
    cdef float *floats = NULL
    cdef const SnapGroup *groups
    cdef uint64_t dim, rb_file, rb_seg
    cdef Py_ssize_t n, i, bad_row, got
    cdef Py_ssize_t col = -1
    cdef int to_storage
    cdef embcache_mix_state mix
    cdef SharedEmbeddingCache cache
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(EISDIR, os.strerror(EISDIR), source)
        if not stat.S_ISREG(st.st_mode):
            raise SnapshotError(f"cannot load snapshot {source!r}: not a regular file")
        groups_data = snapshot_meta(source, fd, st.st_size, &F)
        groups = <const SnapGroup *>(<char *>groups_data)
        if F.n_groups > 1:
            dims = [groups[i].dim for i in range(F.n_groups)]
            raise DimensionMismatchError(
                f"cannot load snapshot {source!r} into a SharedEmbeddingCache: it holds vectors "
                f"of {F.n_groups} dims {dims}; a segment holds one")
        dim = F.fixed_dim if F.fixed_dim else (groups[0].dim if F.n_groups else 0)
        if dim == 0 or dim > MAX_DIM:
            raise SnapshotError(f"cannot load snapshot {source!r} into a SharedEmbeddingCache: "
                                + ("it is empty and records no dim" if dim == 0 else
                                   f"its dim {dim} is above {MAX_DIM}"))
        n = <Py_ssize_t>F.n_entries
        recs = <SnapRecord *>malloc(<size_t>n * sizeof(SnapRecord) + F.trailer_bytes)
        counts = <uint64_t *>calloc(<size_t>F.n_groups + 1, sizeof(uint64_t))
        if recs == NULL or counts == NULL:
            raise MemoryError(f"not enough memory to read {n} snapshot entries")
        snapshot_entries(source, fd, &F, groups, recs, counts)
        name_of = list(STORAGES)
        storage_ = name_of[F.storage] if storage is UNSET else storage
        to_storage = STORAGES[storage_]
        rb_file = embc_row_bytes_of(F.storage, dim)
        rb_seg = embc_row_bytes_of(to_storage, dim)
        raw = <char *>malloc(<size_t>(n * rb_file) + 1)
        rows = <char *>malloc(<size_t>(n * rb_seg) + 1)
        floats = <float *>malloc(dim * sizeof(float))
        if raw == NULL or rows == NULL or floats == NULL:
            raise MemoryError(f"not enough memory to read {n} snapshot rows")
        with nogil:
            got = read_full(fd, raw, <size_t>(n * rb_file), F.header_bytes)
            embcache_mix_init(&mix, section_seed(F.file_id, SNAP_SEED_BLOCK))
            if got == n * <Py_ssize_t>rb_file:
                embcache_mix_update(&mix, raw, <size_t>got)
        if got < 0:
            raise OSError(-got, os.strerror(-got), source)
        if got != n * <Py_ssize_t>rb_file:
            raise SnapshotError(f"cannot load snapshot {source!r}: the file ended inside a "
                                "vector block (it shrank while being read)")
        if n and embcache_mix_final(&mix) != groups[0].checksum:
            raise SnapshotError(f"cannot load snapshot {source!r}: the block of vectors of dim "
                                f"{dim} fails its checksum (corrupt, or from another save: the "
                                "file mixes two saves)")
        with nogil:
            bad_row = convert_rows(F.storage, raw, to_storage, rows, dim, n, floats, &col)
        if bad_row >= 0 and col < 0:
            raise SnapshotError(f"cannot load snapshot {source!r}: a vector of dim {dim} holds "
                                f"NaN or infinity (entry {bad_row}, stored as "
                                f"{name_of[F.storage]})")
        if bad_row >= 0:
            digest = bytes((<char *>recs[bad_row].digest)[:32]).hex()
            raise InvalidVectorError(
                f"cannot load snapshot {source!r}: converting to storage={storage_!r}: entry "
                f"{bad_row} (key digest {digest}) value [{col}] = {floats[col]!r} is one "
                f"{storage_} cannot hold; nothing was loaded")
        check_distinct(source, recs, n)
        limits = (
            F.max_entries if max_entries is UNSET else max_entries,
            (F.ttl_seconds if F.ttl_seconds > 0 else None) if ttl_seconds is UNSET else ttl_seconds,
            F.max_memory_mb if max_memory_mb is UNSET else max_memory_mb,
        )
        # everything is checked: open (or create) the segment and store
        cache = cls(name, *limits, dim=dim, storage=storage_, mode=mode, label=label)
        try:
            store_loaded(cache, recs, rows, n)
        except BaseException:
            cache.close()
            raise
        return cache
    finally:
        os.close(fd)
        free(recs)
        free(counts)
        free(raw)
        free(rows)
        free(floats)


cdef int check_distinct(object source, const SnapRecord *recs, Py_ssize_t n) except -1:
    """SnapshotError when two entries have one key digest."""
    cdef SnapRecord *copy = <SnapRecord *>malloc(<size_t>n * sizeof(SnapRecord) + 1)
    cdef Py_ssize_t i, repeats = 0
    if copy == NULL:
        raise MemoryError()
    with nogil:
        memcpy(copy, recs, <size_t>n * sizeof(SnapRecord))
        qsort(copy, n, sizeof(SnapRecord), compare_digest)
        for i in range(1, n):
            if memcmp(copy[i].digest, copy[i - 1].digest, 32) == 0:
                repeats += 1
    free(copy)
    if repeats:
        raise SnapshotError(f"cannot load snapshot {source!r}: {repeats} entries repeat another "
                            "entry's key digest")
    return 0


cdef int store_loaded(SharedEmbeddingCache self, const SnapRecord *recs, const char *rows,
                      Py_ssize_t n) except -1:
    """Store the checked rows of a snapshot (least recent first): walking from the
    most recent, those not expired on the wall clock while their stripe has room
    (so no loaded entry evicts another loaded one); then stored in the saved order,
    their remaining TTL cut to the segment's. Into an existing segment these are
    puts: they may evict what it held (CLOCK's choice), as any put does. The
    statistics of a segment this load created start at zero."""
    cdef const embc_layout *L = &self.seg.L
    cdef unsigned char *keep = <unsigned char *>calloc(<size_t>n + 1, 1)
    cdef uint32_t *room = <uint32_t *>calloc(L.n_stripes, sizeof(uint32_t))
    cdef uint32_t *stripe_of = <uint32_t *>malloc((<size_t>n + 1) * sizeof(uint32_t))
    cdef uint64_t *hashes = <uint64_t *>malloc((<size_t>n + 1) * sizeof(uint64_t))
    cdef Py_ssize_t i
    cdef uint32_t s
    cdef double wall_now = time.time(), now = embc_now(), remaining, expires
    cdef embc_put p
    cdef embc_stripe *st
    try:
        if keep == NULL or room == NULL or stripe_of == NULL or hashes == NULL:
            raise MemoryError()
        for s in range(L.n_stripes):
            room[s] = embc_stripe_cap(L, s)
        for i in range(n - 1, -1, -1):
            if recs[i].expires <= wall_now:
                continue
            hashes[i] = embc_hash(&self.seg, recs[i].digest)
            s = embc_stripe_of(&self.seg, hashes[i])
            if room[s] == 0:
                continue
            room[s] -= 1
            stripe_of[i] = s
            keep[i] = 1
        for i in range(n):
            if not keep[i]:
                continue
            remaining = recs[i].expires - wall_now
            expires = INFINITY if L.ttl_seconds <= 0 else now + min(remaining, L.ttl_seconds)
            s = stripe_of[i]
            self.lock(s)
            if embc_put_begin(&self.seg, s, hashes[i], recs[i].digest, now, &p):
                embc_unlock(&self.seg, s)
                raise SharedSegmentError(f"a stripe of {self.path} could not be repaired")
            memcpy(embc_row(&self.seg, s, p.slot), rows + <size_t>i * L.row_bytes, L.row_bytes)
            embc_put_publish(&self.seg, s, hashes[i], recs[i].digest, expires, &p)
            embc_unlock(&self.seg, s)
        if self.created:
            for s in range(L.n_stripes):
                self.lock(s)
                st = embc_stripe_at(&self.seg, s)
                st.hits = st.misses = st.puts = st.overwrites = 0
                st.evictions = st.expirations = st.removals = 0
                embc_unlock(&self.seg, s)
    finally:
        free(keep)
        free(room)
        free(stripe_of)
        free(hashes)
    return 0
