# The segment's file: names, the boot id, opening, stale temporary files, and
# whether a process (a flight's owner, a builder) still runs, and building a
# segment's file unnamed (O_TMPFILE) and linking it (linkat). Included by
# _segment.pyx.

def owner_alive(int pid, unsigned int start=0):
    """Whether process `pid` runs (a zombie does not: it is dead, not yet reaped)
    and, when `start` is given (own_start of the owner when it claimed),
    is the process that started then: pids are reused, and a process given a
    dead owner's pid later is not that owner. A pid below 1 (a corrupt or forged
    marker: kill() would test a process group or every process) runs nowhere."""
    if pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                    # another user's process: /proc still tells
    fields = proc_stat_fields(pid)
    if fields is None:
        return True
    if fields[0] in (b"Z", b"X"):
        return False
    return not start or start_of(fields) == start


cdef object proc_stat_fields(int pid):
    """The fields of /proc/PID/stat after the command name (the state first), or
    None when unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 19 else None


cdef unsigned int start_of(list fields):
    """The low 32 bits of a process's start time (clock ticks since boot: the
    22nd field of /proc/PID/stat, the 20th after the command name)."""
    return int(fields[19]) & 0xFFFFFFFF


# This process's start time as a flight owner records it (0 if /proc is not
# readable: the owner is then known by its pid alone). Read at import and again
# in every forked child, so that no process, a grandchild given a dead
# ancestor's pid included, records another's.
cdef unsigned int own_start = 0


def _read_own_start():
    global own_start
    fields = proc_stat_fields(os.getpid())
    own_start = start_of(fields) if fields is not None else 0


_read_own_start()
os.register_at_fork(after_in_child=_read_own_start)


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


cdef bint unnamed_builds = True   # False once linking an unnamed file was refused


cdef tuple open_build(str folder, str base, int mode):
    """A file to build segment `base` in, in `folder`: ``(fd, tmp)``. Where the
    file system takes O_TMPFILE (tmpfs does), an unnamed file (`tmp` None): a
    builder killed before linking it leaves nothing behind, the kernel frees
    it. Elsewhere a temporary ``.BASE.PID.HEX.tmp`` (sweep_stale_builds removes
    those of dead builders, as those older versions of embcache left)."""
    sweep_stale_builds(folder, base)
    if unnamed_builds and hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(folder or ".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode), None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    return fd, tmp


cdef extern from "<fcntl.h>":
    int AT_FDCWD
    int AT_SYMLINK_FOLLOW
    int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
               int flags) nogil


cdef int link_build(int fd, object tmp, str path) except -1:
    """Give the built file `fd` (named `tmp`, or unnamed) the name `path`: 0;
    1 when another process's segment has it already; 2 when linking an unnamed
    file was refused (a sandbox's /proc, say): builds are named from then on,
    and this one is built again. An unnamed file is linked through its
    /proc/self/fd entry, followed (os.link would link the entry itself)."""
    global unnamed_builds
    cdef bytes source, target
    cdef int code
    if tmp is not None:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return 1
        return 0
    source = os.fsencode(f"/proc/self/fd/{fd}")
    target = os.fsencode(path)
    if linkat(AT_FDCWD, source, AT_FDCWD, target, AT_SYMLINK_FOLLOW) == 0:
        return 0
    code = c_errno
    if code == errno.EEXIST:
        return 1
    if code in (errno.EPERM, errno.EACCES, errno.ENOENT, errno.EXDEV, errno.EINVAL, errno.ENOTSUP):
        unnamed_builds = False
        return 2
    raise OSError(code, os.strerror(code), path)


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
