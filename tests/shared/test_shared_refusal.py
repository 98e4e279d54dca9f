"""Files that are not sound segments of this version are refused with a clear
SharedSegmentError before anything past the header is mapped (no SIGBUS), and
are left byte for byte as they were. Each case runs in a child process, so a
crash would fail the test rather than end the run."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PACKAGE_PARENT, run_python
from segments import HEADER_CHECKSUM_AT, fresh_segment_name, key_of, vector_of

from embcache import SharedEmbeddingCache, SharedSegmentError
from embcache._core import snapshot_checksum

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


SEED = 0x656D6263736D3031
BOOT_ID_AT = 168
OFFSETS = {
    "version": 8,
    "abi_entry": 24,
    "ready": 36,
    "total_bytes": 40,
    "dim": 48,
    "storage": 52,
    "capacity": 96,
    "n_stripes": 104,
    "rows_at": 136,
}


def make_segment(name: str) -> Path:
    with SharedEmbeddingCache(name, 500, None, 4, dim=8) as cache:
        cache.put(key_of(1), vector_of(1, 8))
    return Path(f"/dev/shm/{name}")


def reseal(data: bytearray) -> None:
    """Make the header's checksum match its (changed) bytes again."""
    data[HEADER_CHECKSUM_AT : HEADER_CHECKSUM_AT + 8] = struct.pack(
        "<Q", snapshot_checksum(bytes(data[:HEADER_CHECKSUM_AT]), SEED)
    )


def attach_in_child(path: Path) -> str:
    """Attach in a fresh interpreter; its one line of output (the error's type and
    message, or OK)."""
    code = (
        "import sys\n"
        "from embcache import SharedEmbeddingCache, SharedSegmentError\n"
        "try:\n"
        f"    SharedEmbeddingCache.attach({str(path)!r}).close()\n"
        "    print('OK')\n"
        "except SharedSegmentError as e:\n"
        "    print('SharedSegmentError', e)\n"
    )
    done = run_python(["-c", code], cwd=PACKAGE_PARENT, timeout=60)
    assert done.returncode == 0, done.stderr  # no crash, no SIGBUS
    return done.stdout.strip()


def refused(path: Path, match: str) -> None:
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    answer = attach_in_child(path)
    assert answer.startswith("SharedSegmentError"), answer
    assert match in answer, answer
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # left untouched
    with pytest.raises(SharedSegmentError, match=match):
        SharedEmbeddingCache.attach(str(path))


def test_a_sound_segment_attaches(segment_name: str) -> None:
    assert attach_in_child(make_segment(segment_name)) == "OK"


def test_a_foreign_file_is_refused(segment_name: str) -> None:
    path = Path(f"/dev/shm/{segment_name}")
    path.write_bytes(b"not a segment at all" * 500)
    os.chmod(path, 0o600)
    refused(path, "not an embcache shared segment")


@pytest.mark.parametrize("size", [0, 100, 4095])
def test_a_file_shorter_than_a_header_is_refused(segment_name: str, size: int) -> None:
    path = make_segment(segment_name)
    os.truncate(path, size)
    refused(path, "shorter than a segment header")


@pytest.mark.parametrize("cut", [4096, 8192, -4096, -1])
def test_a_truncated_segment_is_refused(segment_name: str, cut: int) -> None:
    path = make_segment(segment_name)
    full = path.stat().st_size
    os.truncate(path, cut if cut > 0 else full + cut)
    refused(path, "size differs")


def test_a_grown_segment_is_refused(segment_name: str) -> None:
    path = make_segment(segment_name)
    os.truncate(path, path.stat().st_size + 4096)
    refused(path, "size differs")


def test_another_format_version_is_refused(segment_name: str) -> None:
    path = make_segment(segment_name)
    data = bytearray(path.read_bytes())
    assert struct.unpack_from("<I", data, OFFSETS["version"])[0] == 2
    struct.pack_into("<I", data, OFFSETS["version"], 1)  # the previous version (SipHash places)
    reseal(data)
    path.write_bytes(bytes(data))
    refused(path, "another format version")


def test_another_abi_is_refused(segment_name: str) -> None:
    path = make_segment(segment_name)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, OFFSETS["abi_entry"], 128)
    reseal(data)
    path.write_bytes(bytes(data))
    refused(path, "another ABI")


def test_a_changed_header_byte_fails_the_checksum(segment_name: str) -> None:
    path = make_segment(segment_name)
    data = bytearray(path.read_bytes())
    data[OFFSETS["dim"]] ^= 1
    path.write_bytes(bytes(data))
    refused(path, "checksum")


@pytest.mark.parametrize(
    ("field", "value"),
    [("capacity", 10**6), ("n_stripes", 64), ("rows_at", 4096), ("total_bytes", 1 << 40)],
)
def test_a_forged_layout_is_refused(segment_name: str, field: str, value: int) -> None:
    """A header with a valid checksum whose layout does not follow from its limits
    (it would make a process index past the mapping) is refused."""
    path = make_segment(segment_name)
    data = bytearray(path.read_bytes())
    fmt = "<I" if field == "n_stripes" else "<Q"
    struct.pack_into(fmt, data, OFFSETS[field], value)
    reseal(data)
    path.write_bytes(bytes(data))
    refused(path, "layout does not follow")


def test_an_unknown_storage_is_refused(segment_name: str) -> None:
    path = make_segment(segment_name)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, OFFSETS["storage"], 9)
    reseal(data)
    path.write_bytes(bytes(data))
    refused(path, "unknown storage")


def test_an_unfinished_segment_is_refused(segment_name: str) -> None:
    path = make_segment(segment_name)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, OFFSETS["ready"], 0)
    reseal(data)
    path.write_bytes(bytes(data))
    refused(path, "never completed")


def test_another_users_segment_is_refused(segment_name: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a file of another user needs root")
    path = make_segment(segment_name)
    os.chown(path, 4321, 4321)
    refused(path, "another user")


def test_a_segment_of_this_user_that_others_may_not_open_keeps_its_mode(segment_name: str) -> None:
    path = make_segment(segment_name)
    assert path.stat().st_mode & 0o077 == 0


def test_a_folder_or_a_symbolic_link_is_refused(segment_name: str, tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    folder.mkdir()
    with pytest.raises((SharedSegmentError, OSError)):
        SharedEmbeddingCache.attach(str(folder))
    target = make_segment(segment_name)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(SharedSegmentError, match="symbolic link"):
        SharedEmbeddingCache.attach(str(link))
    with pytest.raises(SharedSegmentError, match="symbolic link"):
        SharedEmbeddingCache(str(link), 500, None, 4, dim=8)


def test_a_segment_made_before_the_last_reboot_is_refused(segment_name: str) -> None:
    """A path-named segment kept on disk across a reboot holds lock words of
    threads of the previous boot, which no kernel will ever mark dead."""
    path = make_segment(segment_name)
    data = bytearray(path.read_bytes())
    data[BOOT_ID_AT] ^= 0xFF
    reseal(data)
    path.write_bytes(bytes(data))
    refused(path, "before the machine last started")


def test_a_dim_beyond_the_largest_is_refused(segment_name: str) -> None:
    """A header naming a dim above MAX_DIM (with the row size it implies, resealed)
    is refused for its dim before any size is computed from it: a float32 dim of
    2^30 - 1 makes 4 GiB - 4 row bytes, whose 8-byte-aligned stride wraps to 0 in 32
    bits, so a layout computed from it could pass and put every row at one place."""
    from embcache.shared._segment import MAX_DIM

    path = make_segment(segment_name)
    data = bytearray(path.read_bytes())
    dim = (1 << 30) - 1
    assert dim > MAX_DIM
    struct.pack_into("<II", data, OFFSETS["dim"], dim, 1)  # dim, storage float32
    struct.pack_into("<I", data, OFFSETS["dim"] + 8, dim * 4)  # row_bytes
    reseal(data)
    path.write_bytes(bytes(data))
    refused(path, "dim is out of range")
