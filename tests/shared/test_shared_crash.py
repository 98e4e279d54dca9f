"""A process that dies holding a stripe's lock, at the worst instants of a put or
a removal, leaves a stripe the next locker repairs: the dead writer's unpublished
row is never seen, a published one is, everything derived (index, free chain,
size, hand) is rebuilt, and nothing read from the segment is trusted.

The dying child takes the stripe's robust mutex itself (pthread_mutex_lock through
ctypes, as the cache does), writes exactly what a writer killed at that instant
would have written, and SIGKILLs itself."""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from segments import fresh_segment_name, key_of, vector_of

from embcache import SharedEmbeddingCache

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

DIM = 8
ENTRY = 64  # bytes per entry: digest 0, expires_at 32, seq 40, state 48, next_free 52, ref 56
LIVE = 2
NO_SLOT = 0xFFFFFFFF


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


class Layout:
    """Offsets read from a segment's header (one stripe: max_entries 100)."""

    def __init__(self, mm: mmap.mmap) -> None:
        self.row_stride = struct.unpack_from("<I", mm, 60)[0]
        self.stripes_at, self.entries_at, self.cells_at, self.rows_at = struct.unpack_from(
            "<4Q", mm, 112
        )

    def entry(self, slot: int) -> int:
        return self.entries_at + slot * ENTRY

    def row(self, slot: int) -> int:
        return self.rows_at + slot * self.row_stride

    def slot_of(self, mm: mmap.mmap, digest: bytes) -> int:
        for slot in range(101):
            at = self.entry(slot)
            if mm[at : at + 32] == digest and struct.unpack_from("<I", mm, at + 48)[0] == LIVE:
                return slot
        raise LookupError


def die_holding_the_lock(path: str, write: Callable[[mmap.mmap, Layout], None]) -> None:
    """Fork a child that locks stripe 0, calls write(mapping, layout) and is
    SIGKILLed with the lock held; wait for it."""
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(path, os.O_RDWR)
            mm = mmap.mmap(fd, 0)
            layout = Layout(mm)
            base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
            libc = ctypes.CDLL(None)
            if libc.pthread_mutex_lock(ctypes.c_void_p(base + layout.stripes_at)) != 0:
                os._exit(5)
            write(mm, layout)
            os.kill(os.getpid(), signal.SIGKILL)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(6)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def take_free_slot(mm: mmap.mmap, layout: Layout) -> int:
    """Pop the stripe's free chain, as a put does first."""
    head = struct.unpack_from("<I", mm, layout.stripes_at + 44)[0]
    nxt = struct.unpack_from("<I", mm, layout.entry(head) + 52)[0]
    struct.pack_into("<I", mm, layout.stripes_at + 44, nxt)
    return int(head)


def filled(name: str) -> SharedEmbeddingCache:
    cache = SharedEmbeddingCache(name, 100, None, 1, dim=DIM)
    for i in range(60):
        cache.put(key_of(i), vector_of(i, DIM))
    cache.remove(key_of(0))
    assert cache.stripes == 1
    return cache


def all_bit_exact(
    cache: SharedEmbeddingCache, keys: range, value: Callable[[int], np.ndarray]
) -> bool:
    for i in keys:
        got = cache.get(key_of(i))
        if got is None or got.tobytes() != value(i).tobytes():
            return False
    return True


def test_death_while_copying_an_overwrite_leaves_the_old_vector(segment_name: str) -> None:
    with filled(segment_name) as cache:

        def write(mm: mmap.mmap, layout: Layout) -> None:
            slot = take_free_slot(mm, layout)
            mm[layout.row(slot) : layout.row(slot) + DIM * 2] = b"\xff" * (DIM * 2)  # half a row
            mm[layout.entry(slot) : layout.entry(slot) + 32] = key_of(7).digest
            struct.pack_into("<Q", mm, layout.entry(slot) + 40, 10**9)  # its sequence; not LIVE

        die_holding_the_lock(cache.path, write)
        assert cache.verify() == [] and cache.repairs == 1
        assert len(cache) == 59
        assert all_bit_exact(cache, range(1, 60), lambda i: vector_of(i, DIM))
        assert cache.get(key_of(0)) is None


def test_death_between_publishing_and_freeing_keeps_the_newer_vector(segment_name: str) -> None:
    with filled(segment_name) as cache:

        def write(mm: mmap.mmap, layout: Layout) -> None:
            seq = struct.unpack_from("<Q", mm, layout.stripes_at + 56)[0]
            slot = take_free_slot(mm, layout)
            mm[layout.row(slot) : layout.row(slot) + DIM * 4] = vector_of(1007, DIM).tobytes()
            mm[layout.entry(slot) : layout.entry(slot) + 32] = key_of(7).digest
            struct.pack_into("<dQI", mm, layout.entry(slot) + 32, float("inf"), seq + 1, LIVE)

        die_holding_the_lock(cache.path, write)
        assert cache.verify() == [] and cache.repairs == 1
        assert len(cache) == 59
        got = cache.get(key_of(7))
        assert got is not None and got.tobytes() == vector_of(1007, DIM).tobytes()
        others = [i for i in range(1, 60) if i != 7]
        assert all(
            (g := cache.get(key_of(i))) is not None and g.tobytes() == vector_of(i, DIM).tobytes()
            for i in others
        )


def test_death_with_the_index_and_counts_half_rewritten(segment_name: str) -> None:
    with filled(segment_name) as cache:

        def write(mm: mmap.mmap, layout: Layout) -> None:
            cells = cache.stripes * 256 * 8
            rng = np.random.default_rng(0)
            mm[layout.cells_at : layout.cells_at + cells] = rng.bytes(cells)
            struct.pack_into("<III", mm, layout.stripes_at + 40, 12345, 0xDEADBEEF, 10**9)
            slot = int(Layout.slot_of(layout, mm, key_of(9).digest))
            struct.pack_into("<I", mm, layout.entry(slot) + 52, 77777)  # a wild free link

        die_holding_the_lock(cache.path, write)
        assert cache.verify() == [] and cache.repairs == 1
        assert len(cache) == 59
        assert all_bit_exact(cache, range(1, 60), lambda i: vector_of(i, DIM))
        for i in range(100, 200):  # and it goes on working, evicting
            cache.put(key_of(i), vector_of(i, DIM))
        assert len(cache) == 100 and cache.verify() == []


def test_an_out_of_range_slot_read_on_the_normal_path_repairs_the_stripe(
    segment_name: str,
) -> None:
    """No process died: a stray write put wild slot numbers in the index. They
    are range-checked, never followed."""
    with filled(segment_name) as cache:
        fd = os.open(cache.path, os.O_RDWR)
        with mmap.mmap(fd, 0) as mm:
            layout = Layout(mm)
            for cell in range(256):
                at = layout.cells_at + cell * 8 + 4
                if struct.unpack_from("<I", mm, at)[0] != NO_SLOT:
                    struct.pack_into("<I", mm, at, 0x7FFFFFF0)
        os.close(fd)
        assert all_bit_exact(cache, range(1, 60), lambda i: vector_of(i, DIM))
        assert cache.repairs == 1 and cache.verify() == []


def test_a_waiter_blocked_on_a_dead_holders_lock_goes_on(segment_name: str) -> None:
    with filled(segment_name) as cache:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                fd = os.open(cache.path, os.O_RDWR)
                mm = mmap.mmap(fd, 0)
                base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
                ctypes.CDLL(None).pthread_mutex_lock(ctypes.c_void_p(base + Layout(mm).stripes_at))
                os.write(ready_w, b"x")
                time.sleep(60)
            finally:
                os._exit(6)
        assert os.read(ready_r, 1) == b"x"
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.append(cache.get(key_of(5))))
        reader.start()
        time.sleep(0.2)
        assert reader.is_alive()  # blocked on the child's lock, GIL dropped
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        reader.join(10)
        assert not reader.is_alive()
        assert isinstance(got[0], np.ndarray) and got[0].tobytes() == vector_of(5, DIM).tobytes()
        assert cache.repairs == 1 and cache.verify() == []
        os.close(ready_r)
        os.close(ready_w)
