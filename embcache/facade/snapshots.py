"""EmbeddingCache's snapshot helpers: the checks ``EmbeddingCache.open`` makes
on entry (the folder a save must write to, the save period) and its periodic
background save.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from typing import Any, Protocol, Union

from embcache.core.checks import UNSET, check_seconds
from embcache.errors import SnapshotFolderError

__all__ = ["PathLike", "check_folder", "check_save_every", "given", "save_periodically"]

log = logging.getLogger("embcache")

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class Saver(Protocol):
    """What save_every saves (an EmbeddingCache)."""

    async def save(self, path: PathLike) -> int: ...


def check_save_every(seconds: object) -> float | None:
    """`save_every` as seconds > 0 and finite, or None (never)."""
    return check_seconds(seconds, "save_every")


def check_folder(path: PathLike) -> None:
    """SnapshotFolderError unless the folder `path` names a file in (for a
    symbolic link, the folder of the file it names, as save follows it) exists, is a
    folder, and this process may create files in it (``os.access``: write and
    search permission, or for root a file system that is not read-only)."""
    try:
        name = os.fspath(path)
    except TypeError:
        return  # not a path: load says so
    if os.path.islink(name):
        name = os.path.realpath(name)  # save writes through a link: its target's folder
    folder = os.path.dirname(os.path.abspath(name))
    shown = os.fsdecode(folder)
    try:
        mode = os.stat(folder).st_mode
    except FileNotFoundError:
        raise folder_error(
            errno.ENOENT,
            f"the snapshot's folder {shown!r} does not exist; create it (the cache is "
            "saved there on exit, and every save_every seconds)",
            shown,
        ) from None
    except NotADirectoryError:
        mode = 0  # a file where a folder of the path should be
    except OSError as exc:
        raise folder_error(
            exc.errno or errno.EACCES,
            f"the snapshot's folder {shown!r} cannot be reached: {exc.strerror or exc}",
            shown,
        ) from None
    if not stat.S_ISDIR(mode):
        raise folder_error(
            errno.ENOTDIR,
            f"the snapshot's folder {shown!r} is not a folder (a file is in its place or "
            "on its path)",
            shown,
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise folder_error(
            errno.EACCES,
            f"the snapshot's folder {shown!r} is not writable by this process, so the "
            "cache could never be saved there",
            shown,
        )


def folder_error(code: int, message: str, folder: str) -> SnapshotFolderError:
    error = SnapshotFolderError(code, "EmbeddingCache.open: " + message)
    error.filename = folder
    return error


def given(max_entries: Any, ttl_seconds: Any, max_memory_mb: Any, dim: Any) -> dict[str, Any]:
    """The snapshot-limit keywords that were given (not UNSET)."""
    named = {
        "max_entries": max_entries,
        "ttl_seconds": ttl_seconds,
        "max_memory_mb": max_memory_mb,
        "dim": dim,
    }
    return {k: v for k, v in named.items() if v is not UNSET}


async def save_periodically(
    cache: Saver, path: PathLike, seconds: float, stop: asyncio.Event
) -> None:
    """EmbeddingCache.open's background task: save every `seconds` until `stop`
    is set, logging failures."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
            return
        except asyncio.TimeoutError:
            pass
        try:
            n = await cache.save(path)
        except OSError as exc:
            log.warning("embcache: periodic snapshot to %r failed: %s", path, exc)
        else:
            log.debug("embcache: saved %d entries to %r", n, path)
