"""Helpers of the snapshot tests: the file format (version 3; version 2 is the
same with float32 rows and a reserved 0 where version 3 records the storage)
taken apart and put back together (docs/formats.md), a filled cache, its
saved snapshot."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from conftest import key, vec

from embcache import CacheKey, SyncEmbeddingCache
from embcache._core import SNAPSHOT_HEADER, row_bytes, snapshot_checksum

HEADER = 160  # versions 2 and 3
TRAILER = 16  # versions 2 and 3: file id, checksum
STORAGES = ("float32", "float16", "bfloat16", "int8")  # by the header's storage code
RECORD = 48
GROUP = 32
SEED_HEADER, SEED_GROUPS, SEED_ENTRIES, SEED_BLOCK = 1, 2, 3, 256

FIELDS_V1 = (
    "magic version byte_order header_bytes digest_scheme checksum_scheme n_groups "
    "n_entries fixed_dim max_entries max_memory_mb ttl_seconds saved_at file_bytes "
    "entries_offset groups_offset flags reserved"
).split()
FIELDS = [*FIELDS_V1, "file_id", "entries_sum", "groups_sum", "storage"]


def section_sum(records: bytes, file_id: int, seed: int) -> int:
    """A version-2 or 3 section's checksum: its records and the file id, seeded by both."""
    return snapshot_checksum(records + file_id.to_bytes(8, "little"), file_id ^ seed)


def block_sum(block: bytes, file_id: int, group: int) -> int:
    return snapshot_checksum(block, file_id ^ (SEED_BLOCK + group))


class Parsed:
    """A version-2 or 3 snapshot file taken apart: header fields, blocks, entries, groups."""

    def __init__(self, data: bytes) -> None:
        self.h = dict(zip(FIELDS, SNAPSHOT_HEADER.unpack_from(data)))
        eo, go = self.h["entries_offset"], self.h["groups_offset"]
        self.blocks = data[HEADER:eo]
        self.entries = data[eo : go - TRAILER]
        self.groups = data[go:-TRAILER]

    def build(self, fix: bool = True) -> bytes:
        """The file again; with `fix`, offsets, size and every checksum (the
        sections', and their record in the header) recomputed, so only the
        loader's own consistency checks can catch a forgery."""
        h = dict(self.h)
        fid = h["file_id"]
        esum = section_sum(self.entries, fid, SEED_ENTRIES)
        gsum = section_sum(self.groups, fid, SEED_GROUPS)
        if fix:
            h["entries_offset"] = HEADER + len(self.blocks)
            h["groups_offset"] = h["entries_offset"] + len(self.entries) + TRAILER
            h["file_bytes"] = h["groups_offset"] + len(self.groups) + TRAILER
            h["entries_sum"], h["groups_sum"] = esum, gsum
        head = SNAPSHOT_HEADER.pack(*(h[f] for f in FIELDS))
        head += snapshot_checksum(head, SEED_HEADER).to_bytes(8, "little")
        fid_bytes = fid.to_bytes(8, "little")
        ent = self.entries + fid_bytes + esum.to_bytes(8, "little")
        grp = self.groups + fid_bytes + gsum.to_bytes(8, "little")
        return head + self.blocks + ent + grp

    def group_records(self) -> list[list[int]]:
        return [
            list(struct.unpack_from("<4Q", self.groups, i * GROUP))
            for i in range(len(self.groups) // GROUP)
        ]

    def set_groups(self, records: list[list[int]]) -> None:
        self.groups = b"".join(struct.pack("<4Q", *r) for r in records)


def section_bounds(data: bytes) -> list[int]:
    """Where each section of a snapshot starts (header, each block, the entries
    and their trailer, the groups and their trailer) and its end; read from the
    header's offsets, so that a version-1 file is cut right too."""
    (version,) = struct.unpack_from("<I", data, 8)
    header, trailer = (HEADER, TRAILER) if version >= 2 else (128, 8)
    storage = STORAGES[struct.unpack_from("<Q", data, 144)[0]] if version >= 3 else "float32"
    (n_groups,) = struct.unpack_from("<I", data, 28)
    eo, go = struct.unpack_from("<QQ", data, 88)
    cuts = [0, header]
    for g in range(n_groups):
        dim, count = struct.unpack_from("<QQ", data, go + g * GROUP)
        cuts.append(cuts[-1] + row_bytes(storage, dim) * count)
    cuts += [eo, go - trailer, go - 8, go, len(data) - trailer, len(data) - 8, len(data)]
    return sorted(set(cuts))


def read_all(cache: SyncEmbeddingCache, keys: list[CacheKey]) -> dict[CacheKey, bytes]:
    """key -> stored bytes for the keys present (``in`` changes no recency)."""
    out = {}
    for k in keys:
        if k in cache:
            v = cache.get(k)
            assert v is not None
            out[k] = v.tobytes()
    return out


def fill(cache: SyncEmbeddingCache, n: int, dims: tuple[int, ...] = (4,)) -> list[CacheKey]:
    keys = [key(i) for i in range(n)]
    for i, k in enumerate(keys):
        cache.put(k, vec(i, dims[i % len(dims)]))
    return keys


def load_bytes(tmp_path: Path, data: bytes, **kw: Any) -> SyncEmbeddingCache:
    p = tmp_path / "mutant.snap"
    p.write_bytes(data)
    return SyncEmbeddingCache.load(p, **kw)


def save_sample(tmp_path: Path) -> tuple[Path, SyncEmbeddingCache, list[CacheKey]]:
    """A snapshot of 30 entries of dims 3 and 5 (no TTL): the `saved` fixture."""
    c = SyncEmbeddingCache(100, None, 4)
    keys = fill(c, 30, dims=(3, 5))
    c.get(keys[0])
    path = tmp_path / "cache.snap"
    assert c.save(path) == 30
    return path, c, keys
