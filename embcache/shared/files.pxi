# The segment's file: names, the boot id, opening, stale temporary files, and
# whether a process (a flight's owner, a builder) still runs. Included by
# _segment.pyx; no C here.

def owner_alive(int pid):
    """Whether process `pid` runs (a zombie does not: it is dead, not yet reaped).
    A pid below 1 (a corrupt or forged marker: kill() would test a process group
    or every process) runs nowhere."""
    if pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def segment_path(name):
    """The file behind a segment `name`: a plain name (``[A-Za-z0-9._-]``, 1 to
    200 characters, not starting with a dot) lives in /dev/shm; a name holding a
    ``/`` is taken as a path. ArgumentTypeError / ArgumentValueError otherwise."""
    if not isinstance(name, str):
        raise ArgumentTypeError(f"name must be a str, got {type(name).__name__}")
    if "/" in name:
        if "\x00" in name or name.endswith("/"):
            raise ArgumentValueError(f"name {name!r} is not a usable file path")
        return name
    if NAME_RE.fullmatch(name) is None:
        raise ArgumentValueError(
            f"name must be 1 to 200 characters from A-Za-z0-9._- not starting with a dot "
            f"(or a path holding a /), got {name!r}")
    return f"{SHM_DIR}/{name}"


cdef object refuse(str path, str why):
    return SharedSegmentError(f"cannot attach {path}: {why}; the file was left untouched")


def boot_id():
    """The 16 bytes of the kernel's id for this boot of the machine."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return bytes.fromhex(f.read().strip().replace("-", ""))


def sweep_stale_builds(str folder, str base):
    """Remove the temporary files of segments `base` whose builder died before
    linking them (a process killed while creating): ``.BASE.PID.HEX.tmp`` with
    no process PID."""
    prefix = f".{base}."
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return
    for entry in names:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        parts = entry[len(prefix):-4].split(".")
        if len(parts) != 2 or not parts[0].isdigit() or owner_alive(int(parts[0])):
            continue
        try:
            os.unlink(os.path.join(folder, entry))
        except OSError:
            pass


def open_segment(str path):
    """Open an existing segment file for reading and writing, never through a
    symbolic link (SharedSegmentError) or a folder."""
    try:
        return os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse(path, "it is a symbolic link") from None
        if exc.errno == errno.EISDIR:
            raise refuse(path, "it is a folder") from None
        raise
