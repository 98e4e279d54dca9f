# Snapshots, the format: a cache's live entries in one file (docs/formats.md
# has the table). core/snapshot/save.pxi writes it, core/snapshot/load.pxi reads it.
#
# Owns: the layout, its constants and records, the checksum, and the checks of
# the small sections that a load makes before it builds anything. Entries are
# named by their stable digest, never by the per-process index hash, so the file
# holds no secret and a loading process re-keys every entry under its own
# secret hash key.
#
# Layout of version 3, written by save (little-endian; offsets in bytes):
#
#   [0, 160)                  header: magic, version, byte-order mark, schemes,
#                             counts, limits, wall-clock save time, section
#                             offsets, file size, the file id, the checksums of
#                             the entries and groups sections, the storage (u64
#                             at 144: 0 float32, 1 float16, 2 bfloat16, 3 int8);
#                             checksum of bytes [0, 152) last
#   [160, entries_offset)     one block per dimension group: count rows of the
#                             storage's row bytes (float32: dim * 4; float16,
#                             bfloat16: dim * 2; int8: a float32 scale then dim
#                             int8, dim + 4; core/convert.h), exactly the bytes
#                             the cache held, in the policy's order (least
#                             recent first under LRU)
#   [entries_offset, ...)     N records of 48 bytes in recency order (least recent
#                             first): digest, wall-clock expiry, group; file id;
#                             checksum
#   [groups_offset, EOF)      G records of 32 bytes: dim, count, the block's
#                             checksum; file id; checksum
#
# One save binds its file together: the file id (64 random bits drawn per save)
# seeds every checksum and ends the entries and groups sections, the header
# records both sections' checksums, and the groups record each block's, so the
# header's checksum covers, through that chain, every byte of the file. A file
# mixing the bytes of two saves (spliced, or rewritten in place while being read)
# fails a checksum whatever the mix, even when both saves have the same layout.
#
# Version 2 (still loaded) is version 3 with float32 rows only: the field at
# 144 is reserved (0).
#
# Version 1 (still loaded) has a 128-byte header without the file id and the
# sections' checksums, and sections that end with their checksum alone: each
# section is checked on its own, so a file spliced from two version-1 saves of
# the same layout is not detected.


# The version-3 sizes, the seeds, the records (SnapRecord, SnapGroup, SnapLayout)
# and the section checksum are in _core.pxd: embcache.shared writes and reads the
# same files with them.
DEF SNAP_V1_HEADER_BYTES = 128
DEF SNAP_V1_HEADER_SUMMED = 120
DEF SNAP_V1_TRAILER_BYTES = 8     # checksum
DEF SNAP_IO_BYTES = 4194304       # read / write buffer; rows copied per lock hold
DEF SNAP_MAX_DIM = 1099511627776  # 2**40, the constructor's bound on dim

SNAPSHOT_MAGIC = b"EMBCSNAP"
SNAPSHOT_VERSION = 3
SNAPSHOT_BYTE_ORDER = 0x01020304
SNAPSHOT_DIGEST_SCHEME = 1        # BLAKE2b-256 of the canonical key encoding (docs/guide/keys.md)
SNAPSHOT_CHECKSUM_SCHEME = 1      # mix64 v1 (core/snapshot/checksum.h)
# magic, version, byte order, header bytes, digest scheme, checksum scheme, groups,
# entries, fixed dim, max_entries, max_memory_mb, ttl_seconds, saved_at, file bytes,
# entries offset, groups offset, flags, reserved, file id, entries checksum, groups
# checksum, storage (reserved, 0, in version 2); then the u64 checksum
SNAPSHOT_HEADER = struct.Struct("<8s6I3Q3d5Q4Q")
# version 1: the same fields up to the first reserved one; then the u64 checksum
SNAPSHOT_HEADER_V1 = struct.Struct("<8s6I3Q3d5Q")

from embcache.core.checks import UNSET  # a load keyword not given: the snapshot's value


class _SnapshotFormatError(Exception):
    """Internal: a malformed snapshot, re-raised as SnapshotError naming the file."""


class _SnapshotStorageError(Exception):
    """Internal: a value the loading cache's storage cannot hold, re-raised as
    InvalidVectorError naming the file."""


cdef inline uint64_t bytes_checksum(const unsigned char *p, size_t n, uint64_t seed) noexcept nogil:
    return embcache_mix64(p, n, seed)


def snapshot_checksum(data, uint64_t seed=0) -> int:
    """The snapshot checksum (mix64 v1, core/snapshot/checksum.h) of a bytes-like object."""
    cdef const unsigned char[::1] view = memoryview(data).cast("B")
    cdef size_t n = view.shape[0]
    if n == 0:
        return embcache_mix64(NULL, 0, seed)
    return embcache_mix64(&view[0], n, seed)


cdef object snapshot_path(object path, str what):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ArgumentTypeError(f"{what}: path must be a str, bytes or os.PathLike, got "
                                f"{type(path).__name__}")
    path = os.fspath(path)
    if len(path) == 0:
        raise ArgumentValueError(f"{what}: path is empty")
    return path


# --- checks of the small sections --------------------------------------------

cdef int compare_dims(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t *>a)[0]
    cdef uint64_t y = (<const uint64_t *>b)[0]
    return -1 if x < y else (1 if x > y else 0)


cdef object check_groups(const SnapGroup *groups, uint32_t n_groups, uint64_t n_entries,
                         uint64_t file_bytes, uint64_t fixed_dim, int storage,
                         uint64_t *blocks_bytes):
    """The groups section against the header and the file size (rows of `storage`);
    the message of the first problem, or None. Sets blocks_bytes (the vectors' total)."""
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
        row_bytes = embcache_row_bytes(storage, <size_t>groups[g].dim)
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
