# cython: language_level=3
"""The synchronous core of embcache: keys, and one Table of vectors per cache.

Data structures (one Table)::

    cells (Cell[2^k])            entries (Entry[capacity], 64 B)       slabs (Slab[n], one per dim)
    +-------+------+             +------------------------------+      +-------------------------+
    | tag32 | slot |---------->  | digest (32 B)   expires_at   |      | dim=768  rows --------> [capacity] x (row of 768 values, owner slot)
    +-------+------+             | recency_prev / recency_next  |      | used: rows [0, used) live|
    | empty |  -1  |             | expiry_prev  / expiry_next   |      | hole: one free row or -1 |
    +-------+------+             | slab, row -------------------+----> | written: maybe resident  |
                                 +------------------------------+      +-------------------------+

    row: the vector in the table's storage (float32[dim]; float16 or bfloat16[dim];
         int8: a float32 scale and int8[dim]; core/convert.h), decoded by every lookup
    tag = low 32 bits of the key hash (core/keyhash.h) under the secret process key; home cell = tag & mask
    recency list: recency_head (most recent) <-> ... <-> recency_tail   (the LRU policy's links)
    W-TinyLFU (policy="tinylfu") uses the same links for three LRU segments,
      segment_head[WINDOW | PROBATION | PROTECTED] <-> ... <-> segment_tail[...],
      with policy_slots[slot] = 30 key-hash bits << 2 | segment, and a count-min
      sketch (uint64 words of sixteen 4-bit counters, core/sketch.pxi)
    expiry list:  expiry_head (oldest write, next to expire) <-> ... <-> expiry_tail (newest)
    free slots:   free_slot_head -> recency_next -> ... -> NO_SLOT

Invariants (checked by check_table, core/invariants.pxi):
  * every live slot sits in exactly one index cell, on the policy's links (one
    list for LRU; exactly one segment, tagged so, for W-TinyLFU, with the window
    and protected segments within their shares) and in the expiry list; every
    other slot of [0, entry_capacity) is on the free-slot chain;
  * an occupied cell is reachable from its home cell without crossing an empty
    cell (deletion shifts cells back: no tombstones), and its tag is the hash of
    its entry's digest;
  * each slab's rows are dense: [0, used) are each the row of exactly one live
    entry, which the row names as its owner, but for at most one hole below the
    last row; used <= written <= capacity;
  * used_bytes == policy_fixed_bytes (the sketch; 0 for LRU) + sum over live
    entries of (the row bytes of dim in the table's storage: dim * 4 for
    float32, dim * 2 for float16 / bfloat16, dim + 4 for int8 + ENTRY_OVERHEAD_BYTES
    + policy_entry_bytes (4 for W-TinyLFU, else 0)) <= memory_budget_bytes, and
    size <= max_entries; each slab's stride is its row bytes + the owner slot;
  * with one TTL for the whole cache, write order is expiry order: expires_at is
    non-decreasing from expiry_head to expiry_tail, so the head is the only entry
    that ever needs checking before a live entry is evicted.

Locking: one lock per cache (core/lock.h), held for each table operation and never
across Python code, apart from allocating the array get() returns (numpy arrays
are not GC-tracked, so that allocation cannot run a finalizer that re-enters the
cache). A user-supplied clock is read before the lock is taken. Around fork()
the forking thread holds every cache's lock, so the child never inherits one
mid-operation (core/fork.pxi).

Where things are:
  _core.pxd          typedefs, C declarations, the Table struct, the classes' fields
  core/key.pxi           CacheKey, its digest (BLAKE2b-256) and hash (core/keyhash.h), as_key_tuple
  core/intake.pxi        reading and checking vectors, matrices and arguments (one message per rule)
  core/codec.pxi         encode_rows / decode_rows / row_bytes: the row codecs of core/convert.h
  core/table.pxi         the table: growth, index, expiry list, store / discard / make room, row copies
  core/rows.pxi          rows in the table's storage (float32, float16, bfloat16, int8): their
                     bytes, writing (encoding) and reading (decoding) them; codecs in core/convert.h
  core/codec.pxi         encode_rows / decode_rows / row_bytes for Python, and the storages' names
  core/slab_rows.pxi     slab rows: taking and freeing rows, huge-page advice by chunk, trimming
  core/table_shrink.pxi  shrinking the entry table and index as entries become fewer
  core/policy.pxi        the policy seam: hit / insert / remove / miss / victim / admit hooks;
                     LRU and W-TinyLFU (segments, candidate vs victims, hill climbing)
  core/sketch.pxi        W-TinyLFU's count-min frequency sketch (4-bit counters, halving)
  core/invariants.pxi    the invariant walker
  core/snapshot/format.pxi  snapshots: the file layout, records, checksum and section checks
                     (docs/formats.md)
  core/snapshot/save.pxi    snapshots: the atomic save
  core/snapshot/load.pxi    snapshots: the verified load
  core/snapshot/check.pxi   snapshots: the checks of a file's header, groups and entries
  core/cache.pxi         SyncEmbeddingCache: argument checks, lock, clock, calls into the table
  core/batch_steps.pxi   a batch's steps under the lock: out checks, its dimension, reading
                     rows into a matrix, storing a matrix's rows (get_many, put_many, batches)
  core/batch.pxi         PutBatch and GetBatch, the batch protocol used by the layers above
  core/resp.pxi          MgetReader: a reply to Redis MGET read into float32 rows (for the
                     Redis tier; C in core/resp.h)
  core/keyhash.h core/snapshot/blake2b.h core/kernels.h core/lock.h core/slab.h   C: hashes, vector kernels, lock, slab memory
  core/convert.h core/convert_x86.h   C: the row codecs (float16, bfloat16, int8), portable and
                     AVX2 / AVX-512 kernels chosen per CPU at run time
  core/table_mem.h   C: the entry table's and index's memory (a mapping of their own once large)
  core/snapshot/checksum.h core/snapshot/reader.h core/snapshot/writer.h core/worker.h   C: the snapshot checksum (mix64 v1),
                     double-buffered reading, double-buffered writing with write-behind,
                     the worker thread both are built on
"""

cimport cython
cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast_ITEMS
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_GET_LENGTH
from libc.errno cimport EINTR, EIO, EISDIR, ELOOP, ENOENT, ENOTDIR, errno
from libc.math cimport INFINITY, fabs, fabsf, isfinite, isinf, isnan
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memcpy, memset
from posix.fcntl cimport POSIX_FADV_SEQUENTIAL, posix_fadvise
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.types cimport off_t
from posix.unistd cimport pread, write

import gc
import hashlib
import math
import numbers
import operator
import os
import stat
import struct
import sys
import time
import warnings
import weakref

import numpy as np

from embcache.core.info import CacheInfo
from embcache.core.names import check_name
from embcache.core.names import track as track_named
from embcache.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    DimensionMismatchError,
    EntryTooLargeError,
    InvalidKeyError,
    InvalidVectorError,
    KeyTypeError,
    SnapshotError,
    SnapshotFolderError,
    VectorTypeError,
)

cnp.import_array()

# --- constants shared by the included files ----------------------------------------
DEF NO_SLOT = -1                 # no entry slot: end of a list, an empty cell
DEF NO_ROW = -1                  # no row: a slab without a hole
DEF MIN_INDEX_CELLS = 16
DEF FIRST_ENTRY_SLOTS = 64
DEF ENTRY_ALIGN = 64             # the entry table is aligned to cache lines
DEF NAMED_DIMS = 8               # distinct dimensions a batch lookup's error names
DEF GIL_FREE_COPY_BYTES = 262144 # longer copies run without the GIL (lock still held)
DEF POLICY_LRU = 0
DEF POLICY_TINYLFU = 1

include "core/key.pxi"
include "core/intake.pxi"
include "core/codec.pxi"
include "core/invariants.pxi"
include "core/policy.pxi"
include "core/rows.pxi"
include "core/table.pxi"
include "core/slab_rows.pxi"
include "core/table_shrink.pxi"
include "core/snapshot/format.pxi"
include "core/snapshot/save.pxi"
include "core/snapshot/load.pxi"
include "core/snapshot/check.pxi"
include "core/fork.pxi"
include "core/cache_info.pxi"
include "core/lookup.pxi"
include "core/cache.pxi"
include "core/batch_steps.pxi"
include "core/batch.pxi"
include "core/resp.pxi"
