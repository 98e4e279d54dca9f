"""Every ```python block of README.md and of the docs site (docs/**/*.md) runs.

Each page runs in a process of its own (tests/doc_examples.py: its blocks in order
in one namespace, the placeholders defined once there, offline), in a temporary
folder. Blocks that import what is not installed (the real model, a framework)
are skipped, as the README's real-model tests skip; CI installs them. Blocks
fenced ```python {.no-run} are not run: NOT_RUN lists each, with why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, needs_source_tree, run_python
from doc_examples import Block, blocks

RUNNER = Path(__file__).resolve().parent.parent / "doc_examples.py"

# the pages: the README and the site's sources
pytestmark = needs_source_tree


def pages() -> list[str]:
    """The pages with examples; none outside a source tree (a copy of tests/ alone),
    where every test here is skipped."""
    if not (REPO / "README.md").is_file():
        return []
    found = ["README.md"]
    docs = REPO / "docs"
    if docs.is_dir():
        found += sorted(str(p.relative_to(REPO)) for p in docs.rglob("*.md"))
    return found


# (page, the first words of the block's first line) -> why it cannot run in the tests
NOT_RUN: dict[tuple[str, str], str] = {
    ("docs/tiers/snapshots.md", "import contextlib"): (
        "a FastAPI application: it needs fastapi and a server to serve it"
    ),
    ("docs/operations/metrics.md", "from fastapi import FastAPI"): (
        "a FastAPI application: it needs fastapi and a server to serve it (tests/metrics "
        "compiles it and runs the generate_latest example after it)"
    ),
    ("docs/operations/shared.md", "# gunicorn -c gunicorn.conf.py"): (
        "a Gunicorn configuration file: gunicorn (not a test dependency) reads it and calls "
        "its hooks (tests/shared/test_shared_recipes.py runs the hooks as Gunicorn does)"
    ),
    ("docs/operations/shared.md", "import contextlib"): (
        "a FastAPI application served by `uvicorn --workers 4`: it needs fastapi, uvicorn (not "
        "test dependencies) and a server to serve it"
    ),
}

# pages whose examples talk to Redis: the test starts a private redis-server for them
REDIS_PAGES = {"docs/tiers/redis.md"}


def page_blocks(page: str) -> list[Block]:
    return blocks((REPO / page).read_text(encoding="utf-8"))


def test_the_sdist_carries_the_docs() -> None:
    """An unpacked sdist runs these tests and test_readme.py: it needs the pages."""
    manifest = (REPO / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    assert "graft docs" in manifest and "include mkdocs.yml" in manifest


def test_the_pages_have_examples() -> None:
    counted = {page: len(page_blocks(page)) for page in pages()}
    assert counted["README.md"] >= 3, counted
    assert sum(counted.values()) >= 15, counted


def test_no_run_blocks_are_the_listed_ones() -> None:
    """A {.no-run} block is rare and listed in NOT_RUN; every entry still exists."""
    found = set()
    for page in pages():
        for block in page_blocks(page):
            if block.no_run:
                first = block.code.splitlines()[0]
                match = [k for k in NOT_RUN if k[0] == page and first.startswith(k[1])]
                assert match, f"{page}:{block.line}: a {{.no-run}} block not listed in NOT_RUN"
                found.update(match)
    assert found == set(NOT_RUN), f"NOT_RUN lists blocks that are gone: {set(NOT_RUN) - found}"


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    page = request.node.callspec.params["page"]
    if page not in REDIS_PAGES:
        yield None
        return
    from redis_servers import RedisServer, require_redis

    require_redis()
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server.url
    finally:
        server.stop()


def pages_with_examples() -> list[str]:
    return [page for page in pages() if any(not b.no_run for b in page_blocks(page))]


@pytest.mark.parametrize("page", pages_with_examples())
def test_page_examples_run(page: str, tmp_path: Path, redis_url: str | None) -> None:
    work = tmp_path / "work"
    work.mkdir()
    os.environ["HF_HUB_OFFLINE"] = "1"  # never the Hub: the model comes from its wheel
    try:
        if redis_url is not None:
            os.environ["EMBCACHE_DOCS_REDIS_URL"] = redis_url
        proc = run_python([str(RUNNER), str(REPO / page)], cwd=work, timeout=900)
    finally:
        os.environ.pop("EMBCACHE_DOCS_REDIS_URL", None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    if summary["skipped"]:
        if summary["ran"] == 0:
            pytest.skip(f"{page}: every block needs what is not installed: {summary['skipped']}")
        print(f"{page}: skipped (line, module not installed): {summary['skipped']}")
    assert summary["ran"] >= 1


def write_page(folder: Path, body: str) -> Path:
    page = folder / "page.md"
    page.write_text(body, encoding="utf-8")
    return page


def test_runner_fails_on_a_failing_block_and_names_the_line(tmp_path: Path) -> None:
    page = write_page(
        tmp_path, "# p\n\n```python\nx = 1\n```\n\ntext\n\n```python\nassert x == 2\n```\n"
    )
    proc = run_python([str(RUNNER), str(page)], cwd=tmp_path)
    assert proc.returncode != 0
    assert f'File "{page}", line 10' in proc.stderr, proc.stderr


def test_runner_shares_a_namespace_awaits_and_honours_no_run(tmp_path: Path) -> None:
    page = write_page(
        tmp_path,
        "```python\nimport asyncio\nseen = [len(texts)]\n```\n\n"
        "```python {.no-run}\nraise SystemExit(3)\n```\n\n"
        "```python\nawait asyncio.sleep(0)\nseen.append(model.encode(texts).shape)\n"
        "assert seen == [3, (3, 768)], seen\n```\n\n"
        "```python\nimport a_module_nobody_installed\n```\n",
    )
    proc = run_python([str(RUNNER), str(page)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary == {"ran": 2, "skipped": [[17, "a_module_nobody_installed"]], "no_run": [7]}


def test_a_function_a_page_defines_runs_in_a_fork_pool(tmp_path: Path) -> None:
    """The page is the __main__ module while it runs: its functions pickle by name,
    so a multiprocessing.Pool (fork) runs them, as it would in a script."""
    page = write_page(
        tmp_path,
        "```python\nfrom multiprocessing import get_context\n\n\ndef twice(x):\n"
        "    return 2 * x\n```\n\n"
        "```python\nwith get_context('fork').Pool(2) as pool:\n"
        "    assert pool.map(twice, [1, 2, 3]) == [2, 4, 6]\n```\n",
    )
    proc = run_python([str(RUNNER), str(page)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["ran"] == 2


def test_unknown_fence_attributes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fence attributes"):
        blocks("```python {.norun}\nx = 1\n```\n")


# the public modules and where the Reference documents them (mkdocstrings' ::: lines)
PUBLIC_MODULES = {
    "embcache": "embcache/__init__.py",
    "embcache.errors": "embcache/errors.py",
    "embcache.identity": "embcache/identity.py",
    "embcache.redis": "embcache/redis.py",
    "embcache.langchain": "embcache/langchain.py",
    "embcache.llamaindex": "embcache/llamaindex.py",
    "embcache.sentence_transformers": "embcache/sentence_transformers.py",
}


def public_names(path: Path) -> list[str]:
    """A module's ``__all__``, read from its source (importing an adapter would need
    its framework)."""
    import ast

    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            names: list[str] = ast.literal_eval(node.value)
            return names
    raise AssertionError(f"{path} has no __all__")


def test_the_reference_documents_every_public_name() -> None:
    """Every name of every public module's __all__ has its ::: entry in
    docs/reference/ (directly, under another public path, or through its whole
    module), so a new public name cannot be left out of the Reference."""
    import re

    text = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "docs/reference").glob("*.md"))
    documented = set(re.findall(r"^::: ([\w.]+)$", text, flags=re.M))
    assert documented, "no ::: entry in docs/reference/"
    short = {name.rsplit(".", 1)[-1] for name in documented}
    missing = []
    for module, source in PUBLIC_MODULES.items():
        if module in documented:
            continue  # the whole module
        for name in public_names(REPO / source):
            if name == "__version__":
                continue  # said in the text of the Reference
            if (
                f"{module}.{name}" not in documented
                and name not in short
                and not (name.endswith("Error") and "embcache.errors" in documented)
            ):
                missing.append(f"{module}.{name}")
    assert not missing, f"public names without a Reference entry: {missing}"
