# Snapshot loads: the checks of a file's header, groups and entries (snapshot_meta,
# snapshot_entries), shared by SyncEmbeddingCache.load (core/snapshot/load.pxi) and
# SharedEmbeddingCache.load. Included after load.pxi.

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
