"""Layering rules of the package (see the design notes): layers point one way
(core <- facade <- embedder; tools above everything), and no module reaches
into another's underscore names.

(a) every runtime module imports and works with embcache.cli blocked;
(b) no code in the package reads an underscore attribute (``x._name``, not
    dunder) of anything but ``self`` or ``cls``;
(c) importing embcache does not import embcache.cli;
(d) importing embcache imports no framework (LangChain, LlamaIndex,
    sentence-transformers, torch) and none of the adapters over them.
"""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest
from conftest import PACKAGE_PARENT, run_python

# the package the tests imported: the source tree, or the installed wheel's files
SOURCES = PACKAGE_PARENT / "embcache"
RUNTIME_MODULES = {
    "embcache",
    "embcache._core",
    "embcache.facade.cache",
    "embcache.flight.registry",
    "embcache.embedder.embedder",
    "embcache.errors",
    "embcache.core.info",
    "embcache.identity",
    "embcache.sentence_transformers",
}
"""Modules that must be among the discovered ones (discovery is not vacuous)."""

BLOCKED_RUN = textwrap.dedent(
    """
    import importlib, importlib.abc, importlib.util, json, pkgutil, sys

    class BlockTools(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "embcache.cli" or name.startswith("embcache.cli."):
                raise ImportError(f"blocked by the layer test: {name}")
            return None

    sys.meta_path.insert(0, BlockTools())

    import numpy as np
    import embcache

    # adapters whose framework is an optional extra not installed here
    OPTIONAL = {"embcache.langchain": "langchain_core", "embcache.llamaindex": "llama_index.core",
                "embcache.adapters.langchain": "langchain_core",
                "embcache.adapters.llamaindex": "llama_index.core",
                "embcache.redis": "redis", "embcache.tier.redis": "redis",
                "embcache.tier.mget": "redis",
                "embcache.metrics.prometheus": "prometheus_client",
                "embcache.metrics.otel": "opentelemetry"}

    def framework_missing(name):
        needs = OPTIONAL.get(name)
        if needs is None:
            return False
        try:
            return importlib.util.find_spec(needs) is None
        except ModuleNotFoundError:
            return True

    def skipped(name):
        return name.split(".")[1] in ("cli", "__main__") or framework_missing(name)

    def on_error(name):
        if not skipped(name):
            raise ImportError(f"cannot import package {name}")

    names = ["embcache"] + sorted(
        info.name
        for info in pkgutil.walk_packages(embcache.__path__, "embcache.", onerror=on_error)
        if not skipped(info.name)
    )
    for name in names:
        importlib.import_module(name)

    # and the runtime works: the core, the asyncio facade, the embedder
    import asyncio
    from embcache import CacheKey, CachedEmbedder, EmbeddingCache, SyncEmbeddingCache

    sync = SyncEmbeddingCache(100, 3600, 1, dim=4)
    key = CacheKey.from_text("hello", "model-v1")
    sync.put(key, [1, 2, 3, 4])
    assert sync.get(key).tolist() == [1.0, 2.0, 3.0, 4.0]
    matrix, found = sync.get_many([key, CacheKey("absent", "model-v1")])
    assert found.tolist() == [True, False] and matrix.shape == (2, 4)
    assert sync.get_cache_info().size == 1

    async def main():
        cache = EmbeddingCache(100, None, 1, dim=4)
        await cache.put(key, np.ones(4))
        assert (await cache.get(key)).tolist() == [1.0] * 4
        other = CacheKey("b", "m")
        got = await cache.get_or_compute([key, other], lambda ks: np.zeros((len(ks), 4)))
        assert got.shape == (2, 4)
        embedder = CachedEmbedder(
            lambda texts: np.ones((len(texts), 4)), "model-v1", cache=EmbeddingCache(100, None, 1)
        )
        assert (await embedder.embed(["a", "b", "a"])).shape == (3, 4)

    asyncio.run(main())
    tools = sorted(n for n in sys.modules if n.startswith("embcache.cli"))
    print(json.dumps({"imported": names, "tools": tools}))
    """
)


def test_runtime_works_with_tools_blocked(tmp_path: Path) -> None:
    proc = run_python(["-c", BLOCKED_RUN], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    imported = set(result["imported"])
    assert RUNTIME_MODULES <= imported, sorted(RUNTIME_MODULES - imported)
    assert not any(n.startswith(("embcache.cli", "embcache.__main__")) for n in imported)
    assert result["tools"] == []


def test_importing_embcache_does_not_import_tools(tmp_path: Path) -> None:
    code = (
        "import json, sys, embcache\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.startswith('embcache'))))"
    )
    proc = run_python(["-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert "embcache._core" in loaded  # the import really happened
    assert [n for n in loaded if n.startswith("embcache.cli")] == []


FRAMEWORKS = (
    "langchain_core",
    "langchain",
    "langchain_classic",
    "llama_index",
    "sentence_transformers",
    "transformers",
    "torch",
)
ADAPTERS = ("embcache.langchain", "embcache.llamaindex", "embcache.sentence_transformers")


def test_importing_embcache_imports_no_framework(tmp_path: Path) -> None:
    code = (
        "import json, sys, embcache, embcache.identity\n"
        "print(json.dumps(sorted(n.split('.')[0] if not n.startswith('embcache') else n\n"
        "                        for n in sys.modules)))"
    )
    proc = run_python(["-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert "embcache.identity" in loaded
    assert not loaded & set(FRAMEWORKS), sorted(loaded & set(FRAMEWORKS))
    assert not loaded & set(ADAPTERS), sorted(loaded & set(ADAPTERS))


def test_the_sentence_transformers_helper_imports_no_framework(tmp_path: Path) -> None:
    """It reads the model through its own attributes (duck-typed)."""
    code = (
        "import json, sys, embcache.sentence_transformers\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    proc = run_python(["-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert not loaded & set(FRAMEWORKS), sorted(loaded & set(FRAMEWORKS))


def _is_private(attr: str) -> bool:
    """An underscore name that is not a dunder."""
    return attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))


def private_accesses(path: Path, root: Path = SOURCES.parent) -> list[str]:
    """``file:line: expr`` (file relative to `root`) for every ``x._name`` in
    `path` whose ``x`` is not the plain name ``self`` or ``cls``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append((node.lineno, node.col_offset, ast.unparse(node)))
    rel = path.relative_to(root).as_posix()
    return [f"{rel}:{line}: {expr}" for line, _, expr in sorted(found)]


PY_FILES = sorted(SOURCES.rglob("*.py"))


def test_scan_sees_the_package() -> None:
    names = {p.relative_to(SOURCES).as_posix() for p in PY_FILES}
    assert {"__init__.py", "facade/cache.py", "cli/cli.py"} <= names


def test_scan_flags_foreign_private_attributes(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "class A:\n"
        "    def f(self, other):\n"
        "        self._ok = self.__dict__\n"
        "        return other._bad, self._ok.__len__, obj.attr._deep, cls._fine\n"
        "os._exit(0)\n",
        encoding="utf-8",
    )
    assert private_accesses(sample, tmp_path) == [
        "sample.py:5: other._bad",
        "sample.py:5: obj.attr._deep",
        "sample.py:6: os._exit",
    ]


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: p.relative_to(SOURCES).as_posix())
def test_no_underscore_attribute_of_another_object(path: Path) -> None:
    offenders = private_accesses(path)
    assert not offenders, (
        f"{len(offenders)} access(es) to an underscore attribute of an object other than "
        "self/cls (make the name public, or move the code to the class that owns it):\n  "
        + "\n  ".join(offenders)
    )


# Single flight sits below the core: the core makes a cache's registry itself on
# its first get_or_compute, importing embcache.flight then; nothing else above it.
# A "bare" run installs an empty embcache package object first, so that the
# package's __init__ (which imports every layer) does not hide what a module
# imports by itself.
LAYER_RUN = textwrap.dedent(
    """
    import asyncio, importlib, importlib.util, json, sys, types
    import numpy as np
    bare, first = sys.argv[1] == "bare", sys.argv[2]
    if bare:
        spec = importlib.util.find_spec("embcache")
        package = types.ModuleType("embcache")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["embcache"] = package

    def loaded():
        return sorted(n for n in sys.modules if n.startswith("embcache."))

    importlib.import_module(first)
    core = importlib.import_module("embcache._core")
    after_import = loaded()
    cache = core.SyncEmbeddingCache(10)
    after_cache = loaded()
    rows = cache.get_or_compute(
        [core.CacheKey("h1", "m"), core.CacheKey("h2", "m")],
        lambda keys: np.full((len(keys), 3), 1.5),
    )
    assert rows.shape == (2, 3) and (rows == 1.5).all()
    assert cache.get_or_compute([core.CacheKey("h1", "m")], lambda keys: 1 / 0).shape == (1, 3)
    after_call = loaded()
    facade = importlib.import_module("embcache.facade.cache")

    async def twice(keys):
        return np.full((len(keys), 3), 2.0)

    shared = facade.EmbeddingCache(10)
    got = asyncio.run(shared.get_or_compute([core.CacheKey("h3", "m")], twice))
    assert (got == 2.0).all() and shared.sync.flights.in_flight() == 0
    print(json.dumps({"import": after_import, "cache": after_cache, "call": after_call}))
    """
)
ABOVE_THE_CORE = (
    "embcache.facade",
    "embcache.embedder",
    "embcache.tier",
    "embcache.adapters",
    "embcache.cli",
    "embcache.redis",
    "embcache.langchain",
    "embcache.llamaindex",
    "embcache.sentence_transformers",
)


def _layer_run(tmp_path: Path, how: str, first: str) -> dict[str, list[str]]:
    script = tmp_path / "layer_run.py"
    script.write_text(LAYER_RUN, encoding="utf-8")
    proc = run_python([str(script), how, first], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout)
    return result


def test_the_core_imports_nothing_above_it_and_flight_only_when_used(tmp_path: Path) -> None:
    result = _layer_run(tmp_path, "bare", "embcache._core")
    assert "embcache._core" in result["import"]  # the import really happened
    for stage in ("import", "cache"):  # making a cache costs no import either
        assert [n for n in result[stage] if n.startswith("embcache.flight")] == []
    assert "embcache.flight.registry" in result["call"]
    for stage in ("import", "cache", "call"):
        assert [n for n in result[stage] if n.startswith(ABOVE_THE_CORE)] == [], stage


def test_single_flight_imports_nothing_of_the_core(tmp_path: Path) -> None:
    result = _layer_run(tmp_path, "bare", "embcache.flight.registry")
    # importing the core second: flight did not bring it in
    assert "embcache._core" in result["import"]
    code = (
        "import importlib.util, json, sys, types\n"
        "spec = importlib.util.find_spec('embcache')\n"
        "package = types.ModuleType('embcache')\n"
        "package.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['embcache'] = package\n"
        "import embcache.flight.registry, embcache.flight.deadline\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.startswith('embcache.'))))"
    )
    proc = run_python(["-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert "embcache.flight.registry" in loaded
    assert "embcache._core" not in loaded
    assert [n for n in loaded if n.startswith(ABOVE_THE_CORE)] == []


@pytest.mark.parametrize("how", ["bare", "package"])
@pytest.mark.parametrize(
    "first", ["embcache._core", "embcache.flight", "embcache.flight.registry", "embcache.facade"]
)
def test_get_or_compute_works_in_every_import_order(tmp_path: Path, how: str, first: str) -> None:
    result = _layer_run(tmp_path, how, first)  # the run asserts the answers itself
    assert "embcache.flight.registry" in result["call"]
