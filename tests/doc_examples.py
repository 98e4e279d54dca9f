"""Runs the ```python blocks of a Markdown page (README.md, docs/**/*.md).

The blocks of one page run in order in one namespace, the ``__main__`` module
while they run (so a function a page defines pickles by name, as a script's does:
a ``multiprocessing.Pool`` of the ``fork`` start method can run it), which starts
with the placeholders below (what the examples use without defining: some texts, a model,
an embedding function, a Redis URL), in the current folder, offline. A block may
``await`` at top level: it then runs on the page's one event loop. A block fenced
```python {.no-run} is not run (keep them rare: the tests list them); a block
importing a module that is not installed (the real model, a framework) is skipped,
and the summary names it.

As a script: ``python tests/doc_examples.py PAGE`` runs PAGE and prints, as its last
line, a JSON summary: ``{"ran": N, "skipped": [[LINE, MODULE], ...], "no_run": [LINE, ...]}``;
a failing block raises (the traceback names the page and the block's first line).
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib.util
import inspect
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", flags=re.S | re.M)
NO_RUN = " {.no-run}"

# The placeholders, defined once. The examples rely on exactly these names.
PLACEHOLDERS = '''
import hashlib as _hashlib
import os as _os

import numpy as _np

texts = ["first text", "second text", "first text"]


class _Model:
    """Stands in for a real embedding model: 768 floats per text, the same for the
    same text."""

    def encode(self, texts):
        seeds = [int.from_bytes(_hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        rows = [_np.random.default_rng(s).standard_normal(768) for s in seeds]
        return _np.asarray(rows, _np.float32).reshape(len(texts), 768)


model = _Model()


def embed_fn(texts):
    return model.encode(texts)


redis_url = _os.environ.get("EMBCACHE_DOCS_REDIS_URL", "redis://127.0.0.1:6379")
'''


@dataclasses.dataclass(frozen=True)
class Block:
    """One ```python block: the line its code starts on, the code, and whether it
    is fenced {.no-run}."""

    line: int
    code: str
    no_run: bool


def blocks(text: str) -> list[Block]:
    """Every ```python block of `text`, in order. A fence's text after ``python``
    must be empty or `` {.no-run}``."""
    found = []
    for m in FENCE.finditer(text):
        attrs = m.group(1).rstrip()
        if attrs not in ("", NO_RUN):
            line = text.count("\n", 0, m.start()) + 1
            raise ValueError(f"line {line}: unknown fence attributes {attrs!r} (only {NO_RUN!r})")
        line = text.count("\n", 0, m.start(2)) + 1
        found.append(Block(line, m.group(2), attrs == NO_RUN))
    return found


def missing_module(code: str) -> str | None:
    """The first module `code` imports that is not installed, or None."""
    for node in ast.walk(ast.parse(code)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if importlib.util.find_spec(top) is None:
                return top
    return None


def run_page(path: Path) -> dict[str, Any]:
    """Run `path`'s blocks (see the module docstring); the summary."""
    page = types.ModuleType("__main__")
    namespace: dict[str, Any] = page.__dict__
    exec(compile(PLACEHOLDERS, "<doc placeholders>", "exec"), namespace)
    summary: dict[str, Any] = {"ran": 0, "skipped": [], "no_run": []}
    loop = asyncio.new_event_loop()
    runner = sys.modules["__main__"]
    sys.modules["__main__"] = page
    try:
        for block in blocks(path.read_text(encoding="utf-8")):
            if block.no_run:
                summary["no_run"].append(block.line)
                continue
            absent = missing_module(block.code)
            if absent is not None:
                summary["skipped"].append([block.line, absent])
                continue
            # line numbers in tracebacks are the page's
            source = "\n" * (block.line - 1) + block.code
            code = compile(source, str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)  # noqa: S307 - the page's own example
            if inspect.iscoroutine(result):
                loop.run_until_complete(result)
            summary["ran"] += 1
    finally:
        sys.modules["__main__"] = runner
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return summary


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/doc_examples.py PAGE", file=sys.stderr)
        return 2
    summary = run_page(Path(argv[0]).resolve())
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
