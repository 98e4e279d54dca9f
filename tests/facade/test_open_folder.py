"""``EmbeddingCache.open`` refuses, on entry, a snapshot path whose folder no save
could ever write to: missing, a file, or not writable. Before, such a cache
served requests and lost everything at the save on exit.

The read-only case needs permission bits to count: root ignores them (only a
read-only file system stops root, as ``os.access`` reports), so as root that test
runs its check in a forked child that has dropped to the ``nobody`` user.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TIMEOUT, key, run

from embcache import EmbcacheError, EmbeddingCache, SnapshotFolderError

NOBODY = 65534


async def open_and_serve(path: Any, **kwargs: Any) -> bool:
    """Open a cache at `path`; True if the body ran (served a put and a get)."""
    async with EmbeddingCache.open(path, **kwargs) as cache:
        await cache.put(key(1), np.ones(4, dtype=np.float32))
        assert await cache.get(key(1)) is not None
        return True


def check_refused(path: Any, code: int, folder: Path, words: str) -> None:
    with pytest.raises(SnapshotFolderError) as info:
        run(open_and_serve(path, save_every=60))
    error = info.value
    assert isinstance(error, EmbcacheError) and isinstance(error, OSError)
    assert error.errno == code
    assert error.filename == str(folder)
    assert str(folder) in str(error) and words in str(error)
    assert not folder.is_dir() or not any(folder.iterdir()), "nothing was written"


@pytest.mark.parametrize("kind", [str, Path, os.fsencode])
def test_a_missing_folder_is_refused_on_entry(tmp_path: Path, kind: Any) -> None:
    folder = tmp_path / "no such folder"
    check_refused(kind(str(folder / "cache.snap")), errno.ENOENT, folder, "does not exist")
    assert not folder.exists()


def test_a_folder_that_is_a_file_is_refused_on_entry(tmp_path: Path) -> None:
    folder = tmp_path / "a file"
    folder.write_bytes(b"not a folder")
    check_refused(folder / "cache.snap", errno.ENOTDIR, folder, "is not a folder")
    assert folder.read_bytes() == b"not a folder"


def test_a_file_on_the_folders_path_is_refused_on_entry(tmp_path: Path) -> None:
    (tmp_path / "a file").write_bytes(b"")
    folder = tmp_path / "a file" / "inner"
    check_refused(folder / "cache.snap", errno.ENOTDIR, folder, "is not a folder")


def test_a_symbolic_link_is_checked_at_the_folder_save_writes_to(tmp_path: Path) -> None:
    # save writes through a link, so open checks the folder of the file it names
    (tmp_path / "links").mkdir()
    link = tmp_path / "links" / "cache.snap"
    link.symlink_to(Path("..") / "gone" / "cache.snap")
    check_refused(link, errno.ENOENT, tmp_path / "gone", "does not exist")
    assert link.is_symlink() and not (tmp_path / "gone").exists()
    # a link whose target's folder exists opens, saves through the link, reopens
    (tmp_path / "gone").mkdir()
    assert run(open_and_serve(link))
    assert link.is_symlink() and (tmp_path / "gone" / "cache.snap").is_file()


def test_save_and_open_agree_on_a_file_on_the_folders_path(tmp_path: Path) -> None:
    from embcache import SyncEmbeddingCache

    (tmp_path / "a file").write_bytes(b"")
    for target in (tmp_path / "a file" / "x.snap", tmp_path / "a file" / "sub" / "x.snap"):
        with pytest.raises(SnapshotFolderError) as info:
            SyncEmbeddingCache(4, None, 1).save(target)
        assert info.value.errno == errno.ENOTDIR
        check_refused(target, errno.ENOTDIR, target.parent, "is not a folder")


def refused_read_only(folder: Path) -> bool:
    """Whether opening a cache in `folder` is refused, before its body, for the
    folder not being writable (EACCES, and the message says so)."""
    try:
        run(open_and_serve(folder / "cache.snap"))
    except SnapshotFolderError as exc:
        return exc.errno == errno.EACCES and "is not writable" in str(exc)
    return False


def test_a_read_only_folder_is_refused_on_entry() -> None:
    # not under pytest's tmp_path, whose parents only root may enter: `nobody`
    # must reach the folder, so that only its own permission bits refuse it
    base = Path(tempfile.mkdtemp(prefix="embcache-read-only-"))
    folder = base / "read-only"
    try:
        base.chmod(0o755)
        folder.mkdir()
        folder.chmod(0o555)
        if os.geteuid() != 0:
            assert refused_read_only(folder)
            return
        # root writes where permission bits forbid it: check as `nobody`, in a child
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            code = 3
            try:
                try:
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                except PermissionError:
                    code = 2  # no right to change user here
                else:
                    code = 0 if refused_read_only(folder) else 1
            finally:
                os.write(write, bytes([code]))
                os._exit(0)
        os.close(write)
        end = time.monotonic() + TIMEOUT
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            assert time.monotonic() < end, "the child hung"
            time.sleep(0.01)
        code = os.read(read, 1)[0]
        os.close(read)
        if code == 2:
            pytest.skip("running as root without the right to drop to another user")
        assert code == 0, f"a read-only folder was not refused for an unprivileged user ({code})"
        assert not any(folder.iterdir())
    finally:
        folder.chmod(0o755)
        shutil.rmtree(base)


def test_a_writable_folder_still_opens_saves_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "cache.snap"
    assert run(open_and_serve(path, save_every=60))
    assert path.is_file()

    async def reopen() -> Any:
        async with EmbeddingCache.open(path) as cache:
            return await cache.get(key(1))

    np.testing.assert_array_equal(run(reopen()), np.ones(4, dtype=np.float32))


def test_a_relative_path_is_checked_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(open_and_serve("cache.snap"))
    assert (tmp_path / "cache.snap").is_file()
    check_refused("missing/cache.snap", errno.ENOENT, tmp_path / "missing", "does not exist")


def test_the_refusal_comes_before_the_body_and_leaves_no_task(tmp_path: Path) -> None:
    ran: list[str] = []

    async def main() -> None:
        before = asyncio.all_tasks()
        with pytest.raises(SnapshotFolderError):
            async with EmbeddingCache.open(tmp_path / "missing" / "c.snap", save_every=0.01):
                ran.append("body")
        assert asyncio.all_tasks() == before

    run(main())
    assert ran == []
