"""The ``embcache`` command: ``embcache check`` (also ``python -m embcache check``).

Measures on this machine whether embcache meets its seven pass/fail criteria
(embcache.cli.criteria) and prints a table of criterion, threshold,
measured value and verdict; ``--compare`` adds a side-by-side comparison with
the installed peer caches against embcache's performance goals
(embcache.cli.compare, its peer loops and Redis rows: imported only when
``--compare`` is given). Exit status: 0 when every criterion passes, 1 when
one fails, 2 for a usage error (the message names the bad argument) or an output
that cannot be written. Every path is checked before anything is measured: the
snapshot folder (made in, and with room for the step's files) and the --json file
(opened, and its first byte written). ``embcache`` alone prints the help;
``embcache --version`` the version.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from typing import TextIO

from embcache import __version__
from embcache.cli.criteria import run_check
from embcache.cli.measure import machine_info
from embcache.cli.report import (
    WIDTH,
    Comparison,
    Progress,
    Report,
    format_report,
    report_to_json,
)
from embcache.cli.snapshot_bandwidth import run_snapshot_check, scratch_bytes
from embcache.cli.workloads import DIM, CheckConfig

__all__ = ["build_parser", "main", "run"]

CHECK_DESCRIPTION = """\
Measure on this machine whether embcache meets its criteria, and print each
criterion with its threshold, the measured value and a verdict:
(1) put throughput: stores per second of DIM-dim vectors (see --dim), more
than 1,000/s;
(2) get throughput: lookups per second, more than 5,000/s;
(3) memory estimation: reported memory within +-50% of the vectors' bytes,
and exact;
(4) concurrent access: the cost per operation with 16 asyncio tasks or 16 OS
threads is at most 3x that with one;
(5) 10,000 stores take less than 30 s;
(6) 1,000 lookups on those 10,000 entries take less than 0.5 s, all hits;
(7) memory limits: caches fed many times their budget stay within it, and the
process's memory stays bounded.
Exits 0 when every criterion passes, 1 otherwise. Progress goes to stderr.
"""


MAX_DIM = 2**20
"""The largest --dim: a 4 MiB vector; the check puts thousands of them."""


def _dim(text: str) -> int:
    """argparse type: an integer from 1 to :data:`MAX_DIM`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    if value > MAX_DIM:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_DIM:,} (2**20), got {value:,}")
    return value


def _json_path(text: str) -> str:
    """argparse type: '-' or a file path whose folder exists and is writable
    (checked before anything is measured)."""
    if text == "-":
        return text
    if not text:
        raise argparse.ArgumentTypeError("empty path (use '-' for stdout)")
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"folder {folder} is not writable")
    if os.path.exists(text) and not os.access(text, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text} is not writable")
    return text


def _folder(text: str) -> str:
    """argparse type: an existing folder (whether files can be made in it, and
    room, is checked before anything is measured: see snapshot_folder_problem)."""
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"folder {text} does not exist")
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return text


MIB = 2**20


def snapshot_folder_problem(folder: str, quick: bool) -> str | None:
    """Why the snapshot step of ``embcache check`` could not write its files in
    `folder` (None: it can): no file can be made there, or too little room."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix="embcache-check-", dir=folder))
    except OSError as exc:
        return f"cannot make files in {folder}: {exc.strerror or exc}"
    try:
        st = os.statvfs(folder)
    except OSError:
        return None  # room unknown: the step's own errors say more
    free, need = st.f_bavail * st.f_frsize, scratch_bytes(quick)
    if free < need:
        return (
            f"{folder} has {free / MIB:,.0f} MiB free; the snapshot step writes about "
            f"{need / MIB:,.0f} MiB there"
        )
    return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``embcache`` command."""
    parser = argparse.ArgumentParser(
        prog="embcache",
        description="embcache: an in-process cache for embedding vectors. "
        "Run `embcache check --help` for the validation report.",
    )
    parser.add_argument("--version", action="version", version=f"embcache {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser(
        "check",
        help="measure whether embcache meets its speed and memory criteria on this machine",
        description=CHECK_DESCRIPTION.replace("DIM", str(DIM)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--quick", action="store_true", help="smaller sizes for a fast smoke run (a few seconds)"
    )
    check.add_argument(
        "--compare",
        action="store_true",
        help="also measure embcache side by side with the installed peer caches (cachebox, "
        "lru-dict, cachetools) against embcache's performance goals, which the report "
        "names; goals do not affect the exit code",
    )
    check.add_argument(
        "--json",
        metavar="PATH",
        type=_json_path,
        help="write all results as JSON to PATH ('-' for stdout; the table then goes to "
        "stderr); PATH is opened before anything is measured",
    )
    check.add_argument(
        "--wide",
        action="store_true",
        help=f"do not wrap the report's tables and text to {WIDTH} columns",
    )
    check.add_argument(
        "--dim",
        type=_dim,
        default=DIM,
        metavar="N",
        help=f"embedding dimension of the vectors stored, 1 to {MAX_DIM:,} (default: {DIM})",
    )
    check.add_argument(
        "--snapshot-dir",
        metavar="DIR",
        type=_folder,
        help="folder (on the disk to measure) for the snapshot-bandwidth files, removed "
        "after (default: the system's temporary folder)",
    )
    check.add_argument(
        "--drop-caches",
        action="store_true",
        help="drop the OS page cache before each snapshot-bandwidth read, so reads come from "
        "the disk (root on Linux; affects the whole machine)",
    )
    check.set_defaults(func=_cmd_check, parser=check)
    return parser


def run(
    cfg: CheckConfig,
    compare: bool,
    progress_stream: TextIO | None,
    snapshot_dir: str | None = None,
    drop_caches: bool = False,
) -> Report:
    """Run the criteria (and the comparison when asked) and return the report;
    progress goes to `progress_stream` (None: silent). Snapshot bandwidth beside
    dd's is measured in `snapshot_dir` (None: the temporary folder)."""
    progress = Progress(progress_stream)
    t0 = time.perf_counter()
    criteria = run_check(cfg, progress)
    seconds = time.perf_counter() - t0
    snapshot = run_snapshot_check(cfg.quick, snapshot_dir, progress, drop_caches)
    comparison = run_compare(cfg, progress) if compare else None
    return Report(cfg, criteria, machine_info(), comparison, seconds, snapshot)


def run_compare(cfg: CheckConfig, progress: Progress) -> Comparison:
    """The ``--compare`` part (embcache.cli.compare), loaded only when asked: a plain
    ``embcache check`` imports neither the comparison, its peer loops nor its Redis
    rows."""
    from embcache.cli.compare import run_compare as measure

    return measure(cfg, progress)


def available_peers() -> list[str]:
    """The peer caches installed here (embcache.cli.peers, loaded when asked)."""
    from embcache.cli.peers import available_peers as installed

    return installed()


PEERS_HINT = (
    "install the peer caches to compare against: pip install cachebox lru-dict cachetools "
    '(from a clone: pip install ".[peers]"; cachebox needs Python >= 3.10)'
)


def missing_peers_note(installed: Sequence[str]) -> str | None:
    """What ``--compare`` says when some (or all) peer caches are not installed."""
    from embcache.cli.peers import PEERS

    missing = [name for name in PEERS if name not in installed]
    if not missing:
        return None
    if not installed:
        return "--compare: no peer cache is installed, nothing to compare with; " + PEERS_HINT
    return (
        f"--compare: {', '.join(missing)} not installed (compared with "
        f"{', '.join(installed)} only); {PEERS_HINT}"
    )


class JsonReport:
    """Where ``--json PATH`` goes, checked before anything is measured so that a
    path that cannot be written fails at once:

    * a regular file (or a new one) is written under a temporary name beside it,
      its first byte at once (every report is a JSON object), and renamed over
      PATH when complete: a run that fails or is interrupted leaves an earlier
      report as it was, and a full disk fails now;
    * a character device that is not a terminal (/dev/null, /dev/full) is opened
      and its first byte written at once;
    * anything else (a pipe, a terminal, /dev/stdout) is written at the end, as
      a shell's redirection would be.

    OSError when PATH cannot be written."""

    def __init__(self, path: str) -> None:
        self.path = path
        target = os.path.realpath(path)
        self._target = target
        self._partial: str | None = None
        self._file: TextIO | None = None
        try:
            st: os.stat_result | None = os.stat(path)  # through links: /dev/stdout's pipe
        except FileNotFoundError:
            st = None
        via_proc = os.path.abspath(path).startswith(("/dev/", "/proc/"))  # /dev/stdout, ...
        if st is not None and (via_proc or not stat.S_ISREG(st.st_mode)):
            if stat.S_ISCHR(st.st_mode):
                f = open(path, "w", encoding="utf-8")  # kept open for finish
                if f.isatty():
                    f.close()
                else:
                    self._file = f
            elif not os.access(path, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        else:
            fd, self._partial = tempfile.mkstemp(
                prefix=f".{os.path.basename(target)}.",
                suffix=".partial",
                dir=os.path.dirname(target),
            )
            self._file = os.fdopen(fd, "w", encoding="utf-8")
        try:
            if self._partial is not None:  # the mode a new file (or PATH's own) would have
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self._partial, stat.S_IMODE(st.st_mode) if st else 0o666 & ~umask)
            if self._file is not None:
                self._file.write("{")
                self._file.flush()
        except OSError:
            self.discard()
            raise

    def finish(self, payload: str) -> None:
        """Write `payload` (a JSON object; its first byte already, when the file
        was opened at the start), close, and put the file in place. OSError when
        it cannot be written (nothing is left behind)."""
        if not payload.startswith("{"):
            raise ValueError("a report is a JSON object")
        try:
            if self._file is None:
                with open(self.path, "w", encoding="utf-8") as f:
                    f.write(payload)
                return
            self._file.write(payload[1:])
            self._file.close()
            if self._partial is not None:
                os.replace(self._partial, self._target)
                self._partial = None
        except OSError:
            self.discard()
            raise

    def discard(self) -> None:
        """Close, and remove the unfinished file (an earlier report stays)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._partial is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._partial)
            self._partial = None


def _open_outputs(args: argparse.Namespace) -> JsonReport | None:
    """Check every path ``embcache check`` writes to, before anything is
    measured (a usage error naming the argument, exit 2, when one cannot be
    written); returns the --json report's file (None for none or stdout)."""
    parser: argparse.ArgumentParser = args.parser
    folder = args.snapshot_dir if args.snapshot_dir is not None else tempfile.gettempdir()
    problem = snapshot_folder_problem(folder, args.quick)
    if problem is not None:
        if args.snapshot_dir is None:
            problem += " (the temporary folder: name another with --snapshot-dir)"
        parser.error(f"argument --snapshot-dir: {problem}")
    if args.json is None or args.json == "-":
        return None
    try:
        return JsonReport(args.json)
    except OSError as exc:
        parser.error(f"argument --json: cannot write {args.json}: {exc.strerror or exc}")


def _cmd_check(args: argparse.Namespace) -> int:
    """Run ``embcache check`` with parsed arguments; returns the exit status."""
    json_file = _open_outputs(args)
    try:
        return _check(args, json_file)
    finally:
        if json_file is not None:
            json_file.discard()  # after finish: nothing left to do


def _check(args: argparse.Namespace, json_file: JsonReport | None) -> int:
    """The run and the report of ``embcache check``, its outputs checked."""
    cfg = CheckConfig.make(quick=args.quick, dim=args.dim)
    note = missing_peers_note(available_peers()) if args.compare else None
    if note is not None and not args.wide:
        note = "\n".join(textwrap.wrap(note, WIDTH, break_on_hyphens=False))
    if note is not None:
        print(note, file=sys.stderr)
    report = run(
        cfg,
        compare=args.compare,
        progress_stream=sys.stderr,
        snapshot_dir=args.snapshot_dir,
        drop_caches=args.drop_caches,
    )
    text = format_report(report, width=None if args.wide else WIDTH)
    json_to_stdout = args.json == "-"
    out = sys.stderr if json_to_stdout else sys.stdout
    out.write(text)
    if note is not None and out is sys.stdout:  # said on stderr at the start, too
        out.write("\n" + note + "\n")
    if args.json is not None:
        payload = json.dumps(report_to_json(report), indent=2) + "\n"
        if json_file is None:
            sys.stdout.write(payload)
        else:
            try:
                json_file.finish(payload)
            except OSError as exc:
                sys.stdout.flush()
                print(
                    f"embcache check: error: could not write the JSON report to {args.json}: "
                    f"{exc.strerror or exc}",
                    file=sys.stderr,
                )
                return 2
    sys.stdout.flush()
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``embcache`` console script; returns the exit status
    (argparse exits with 2 itself on a usage error). No command: the help, exit 0."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(None if argv is None else list(argv))
    if unknown:  # named by the usage of the command they were given to
        where: argparse.ArgumentParser = getattr(args, "parser", parser)
        where.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 0
    status: int = args.func(args)
    return status
