"""Command line: ``embcache check`` (also ``python -m embcache check``).

Measures the seed task's success criteria on this machine and prints a table
of criterion, threshold, measured value and verdict. Exit status: 0 when every
criterion passes, 1 when one fails, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``embcache`` command."""
    parser = argparse.ArgumentParser(
        prog="embcache",
        description="embcache: an in-process cache for embedding vectors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="measure the seed task's success criteria on this machine",
        description=(
            "Measure the seed task's success criteria on this machine (put/get throughput, "
            "memory estimation accuracy, concurrent scaling, 10k-entry dataset, memory "
            "limits) and print criterion, threshold, measured value and verdict. Exits 0 "
            "when every criterion passes, 1 otherwise. Progress goes to stderr."
        ),
    )
    check.add_argument(
        "--quick", action="store_true", help="smaller sizes for a fast smoke run (a few seconds)"
    )
    check.add_argument(
        "--compare",
        action="store_true",
        help="also measure embcache side by side with the installed peer caches "
        "against the DESIGN.md goals (goals do not affect the exit code)",
    )
    check.add_argument(
        "--json",
        metavar="PATH",
        help="write all results as JSON to PATH ('-' for stdout; the table then goes to stderr)",
    )
    check.add_argument(
        "--dim",
        type=_positive_int,
        default=768,
        metavar="N",
        help="embedding dimension used wherever the seed uses 768 (default: 768)",
    )
    return parser


def _cmd_check(args: argparse.Namespace) -> int:
    """Run ``embcache check`` with parsed arguments; returns the exit status."""
    from embcache._check import CheckConfig, format_report, report_to_json, run

    cfg = CheckConfig.make(quick=args.quick, dim=args.dim)
    report = run(cfg, compare=args.compare, progress_stream=sys.stderr)
    text = format_report(report)
    json_to_stdout = args.json == "-"
    (sys.stderr if json_to_stdout else sys.stdout).write(text)
    if args.json is not None:
        payload = json.dumps(report_to_json(report), indent=2) + "\n"
        if json_to_stdout:
            sys.stdout.write(payload)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(payload)
    sys.stdout.flush()
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``embcache`` console script; returns the exit status
    (argparse exits with 2 itself on a usage error)."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if args.command == "check":
        return _cmd_check(args)
    parser.error(f"unknown command {args.command!r}")  # unreachable: choices are enforced
    return 2


if __name__ == "__main__":
    sys.exit(main())
