"""The text layout shared by the ``embcache check`` report's sections: aligned
columns and prose, fitted to a width."""

from __future__ import annotations

import textwrap

__all__ = ["WIDTH", "prose", "table"]

WIDTH = 100
"""Columns the text report fits in (``embcache check --wide``: no limit)."""


def _fit(widths: list[int], minimum: list[int], width: int | None) -> list[int]:
    """Column widths narrowed, widest wrappable column first, until the table
    (two spaces between columns) fits in `width` or no column can give more."""
    widths = list(widths)
    if width is None:
        return widths
    while sum(widths) + 2 * (len(widths) - 1) > width:
        room = [i for i, w in enumerate(widths) if w > minimum[i]]
        if not room:
            break
        widest = max(room, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def _indent(cell: str) -> int:
    return len(cell) - len(cell.lstrip(" "))


def _longest_word(cell: str) -> int:
    return max((len(w) for w in cell.split()), default=0)


def _wrap_cell(cell: str, width: int) -> list[str]:
    """A cell as lines of at most `width` (its leading indent kept on each)."""
    if len(cell) <= width:
        return [cell]
    pad = " " * _indent(cell)
    return textwrap.wrap(
        cell.strip(),
        width,
        initial_indent=pad,
        subsequent_indent=pad,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [""]


def table(
    header: list[str], rows: list[list[str]], right: set[int], width: int | None = WIDTH
) -> list[str]:
    """Rows as aligned text columns; indices in `right` are right-aligned (and
    never wrapped). A table wider than `width` wraps its other cells at word
    boundaries onto continuation lines (the first line of a row keeps every
    short cell, so a row's number and verdict stay on its first line)."""
    natural = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    minimum = [
        natural[i]
        if i in right
        else max([len(header[i]), 4, *(_indent(r[i]) + _longest_word(r[i]) for r in rows)])
        for i in range(len(header))
    ]
    widths = _fit(natural, minimum, width)

    def lines(cells: list[str]) -> list[str]:
        wrapped = [_wrap_cell(c, w) for c, w in zip(cells, widths)]
        out = []
        for k in range(max(len(p) for p in wrapped)):
            parts = [
                (p[k] if k < len(p) else "").rjust(w)
                if i in right
                else (p[k] if k < len(p) else "").ljust(w)
                for i, (p, w) in enumerate(zip(wrapped, widths))
            ]
            out.append("  ".join(parts).rstrip())
        return out

    rule = "  ".join("-" * w for w in widths)
    return [*lines(header), rule, *(line for r in rows for line in lines(r))]


def prose(text: str, width: int | None, indent: int = 4) -> list[str]:
    """One line of prose, wrapped to `width` (continuation lines indented)."""
    if width is None or len(text) <= width:
        return [text]
    return textwrap.wrap(
        text, width, subsequent_indent=" " * indent, break_long_words=False, break_on_hyphens=False
    )
