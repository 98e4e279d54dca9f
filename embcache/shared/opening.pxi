# Opening a segment: the constructor's argument checks (into the layout they
# ask for), the atomic create of a new segment file, the checked attach of an
# existing one, and the comparison of the limits asked for with those found.
# Included by _segment.pyx at module level; each function takes the cache it
# opens.

cdef inline object check_count(object value, str what, long long low, long long high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{what} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ArgumentValueError(f"{what} must be between {low} and {high}, got {value!r}")
    return value


cdef inline double check_positive(object value, str what) except? -1.0:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{what} must be a number, got {type(value).__name__}")
    cdef double v = value
    if not v > 0:
        raise ArgumentValueError(f"{what} must be positive, got {value!r}")
    return v


cdef inline void check_supported() except *:
    if not EMBC_SHM_SUPPORTED:
        raise SharedSegmentError(
            "SharedEmbeddingCache needs Linux (robust process-shared mutexes and /dev/shm)")


cdef int layout_of_args(embc_layout *L, object max_entries, object ttl_seconds,
                        object max_memory_mb, object dim, object storage,
                        object mode) except -1:
    """Check the constructor's limits, dim, storage and mode (type and range,
    nothing opened yet) and make `L` the layout of the segment they describe."""
    check_count(max_entries, "max_entries", 1, 1 << 30)
    cdef double ttl = 0.0
    if ttl_seconds is not None:
        ttl = check_positive(ttl_seconds, "ttl_seconds")
        if ttl == INFINITY:
            ttl = 0.0
    cdef double mb = check_positive(max_memory_mb, "max_memory_mb")
    if not mb < 2.0 ** 42:
        raise ArgumentValueError(f"max_memory_mb must be finite and below 2**42, got {max_memory_mb!r}")
    check_count(dim, "dim", 1, MAX_DIM)
    if not isinstance(storage, str):
        raise ArgumentTypeError(f"storage must be a str, got {type(storage).__name__}")
    if storage not in STORAGES:
        raise ArgumentValueError(
            f"storage must be one of {', '.join(map(repr, STORAGES))}, got {storage!r}")
    check_count(mode, "mode", 0, 0o777)
    cdef const char *why = embc_layout_make(L, dim, STORAGES[storage],
                                            embc_row_bytes_of(STORAGES[storage], dim),
                                            max_entries, mb, ttl)
    if why != NULL:
        if L.capacity == 0 and L.row_bytes:
            raise EntryTooLargeError(
                f"max_memory_mb={max_memory_mb!r} cannot hold even one vector of dim {dim} "
                f"({L.row_bytes + EMBC_ENTRY_OVERHEAD} bytes with metadata)")
        raise ArgumentValueError(why.decode())
    return 0


cdef str describe_field(const embc_layout *L, str field, object value=None):
    """Limit `field` of layout `L` (or `value` given for it) as a message shows it."""
    if field == "storage":
        code = L.storage if value is None else value
        return next((repr(k) for k, v in STORAGES.items() if v == code), str(code))
    if field == "ttl_seconds":
        ttl = L.ttl_seconds if value is None else value
        return repr(ttl) if ttl > 0 else "None"
    if value is None:
        value = {"dim": L.dim, "max_entries": L.max_entries,
                 "max_memory_mb": L.max_memory_mb}[field]
    return repr(value)


cdef int check_same_limits(SharedEmbeddingCache c, const embc_layout *L, str path) except -1:
    """Close `c` and raise ArgumentValueError naming the first field in which the
    segment it opened differs from the limits `L` asked for."""
    for field, mine, theirs in (
            ("dim", L.dim, c.seg.L.dim),
            ("storage", L.storage, c.seg.L.storage),
            ("max_entries", L.max_entries, c.seg.L.max_entries),
            ("max_memory_mb", L.max_memory_mb, c.seg.L.max_memory_mb),
            ("ttl_seconds", L.ttl_seconds, c.seg.L.ttl_seconds)):
        if mine != theirs:
            c.close()
            raise ArgumentValueError(
                f"segment {path} exists with other limits: {field} is "
                f"{describe_field(&c.seg.L, field)} there, {describe_field(&c.seg.L, field, mine)} "
                f"here (attach with SharedEmbeddingCache.attach(name) to take its limits)")
    return 0


cdef bint segment_create(SharedEmbeddingCache c, str path, embc_layout *L, int mode) except -1:
    """Build a segment in an unnamed file (or under a temporary name: open_build)
    and link it to `path`, `c` mapping it; False if another process's segment
    got there first, or linking an unnamed file was refused (this one is
    discarded; the caller opens the other's, or builds again, named)."""
    folder, base = os.path.split(path)
    fd, tmp = open_build(folder, base, mode)
    cdef void *base_p = MAP_FAILED
    cdef embc_header header
    cdef int rc
    cdef bytes boot
    try:
        os.fchmod(fd, mode)          # exactly `mode`, whatever the umask
        # reserve every page now: a full /dev/shm is an error here, not a
        # SIGBUS at some later write
        os.posix_fallocate(fd, 0, L.total_bytes)
        base_p = mmap(NULL, L.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if base_p == MAP_FAILED:
            raise MemoryError(f"could not map {L.total_bytes} bytes for {path}")
        c.seg.base = <char *>base_p
        c.seg.L = L[0]
        key = secrets.token_bytes(16)
        c.seg.k0 = int.from_bytes(key[:8], "little")
        c.seg.k1 = int.from_bytes(key[8:], "little")
        rc = embc_init(&c.seg)
        if rc:
            raise OSError(rc, f"could not initialise the segment's locks: {os.strerror(rc)}")
        boot = boot_id()
        embc_header_fill(&header, L, c.seg.k0, c.seg.k1, <const unsigned char *>boot)
        memcpy(c.seg.base, &header, sizeof(header))
        if link_build(fd, tmp, path) != 0:  # another's segment has the name, or build again
            munmap(base_p, L.total_bytes)
            c.seg.base = NULL
            os.close(fd)
            fd = -1
            return False
        c.fd = fd
        c.path = path
        c.created = True
        fd = -1
        return True
    except BaseException:
        if c.seg.base != NULL:
            munmap(c.seg.base, L.total_bytes)
            c.seg.base = NULL
        raise
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            os.unlink(tmp)


cdef int segment_open_checked(SharedEmbeddingCache c, str path, int fd) except -1:
    """Check the open file `fd` is a sound segment (header read with pread,
    sizes compared before mapping) and map it into `c`; closes `fd` on refusal."""
    cdef embc_header header
    cdef embc_layout L
    cdef const char *why
    cdef void *base_p
    cdef bytes boot
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(path, "it is not a regular file")
        if st.st_uid != os.geteuid():
            raise refuse(path, f"it belongs to another user (uid {st.st_uid}); a segment "
                               "is attached by the user that created it")
        raw = os.pread(fd, sizeof(header), 0)
        memset(&header, 0, sizeof(header))
        memcpy(&header, <const char *>raw, len(raw))
        boot = boot_id()
        why = embc_header_check(&header, <uint64_t>st.st_size if len(raw) == sizeof(header) else 0,
                                embc_row_bytes_of, <const unsigned char *>boot, &L)
        if why != NULL:
            raise refuse(path, why.decode())
        base_p = mmap(NULL, L.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if base_p == MAP_FAILED:
            raise MemoryError(f"could not map {L.total_bytes} bytes of {path}")
    except BaseException:
        os.close(fd)
        raise
    c.seg.base = <char *>base_p
    c.seg.L = L
    c.seg.k0 = header.k0
    c.seg.k1 = header.k1
    c.fd = fd
    c.path = path
    return 0
