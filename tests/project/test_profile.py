"""The test profile (tests/conftest.py): EMBCACHE_TEST_PROFILE picks the default
profile's lighter property and stress settings or the ci profile's heavier ones,
a typo stops the run, and CI runs the ci profile (.ci/run)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from conftest import PROFILE, PROFILES, REPO, needs_source_tree, profile_from, run_python

TESTS = Path(__file__).resolve().parent.parent

READ_PROFILE = """
import sys
sys.path.insert(0, sys.argv[1])
import conftest
print(conftest.PROFILE, conftest.by_profile(default="light", ci="heavy"))
print(conftest.pytest_report_header(None))
"""


def test_unset_or_empty_is_the_default_profile() -> None:
    assert profile_from({}) == "default"
    assert profile_from({"EMBCACHE_TEST_PROFILE": ""}) == "default"
    assert profile_from({"EMBCACHE_TEST_PROFILE": "ci"}) == "ci"
    assert PROFILE in PROFILES


def test_the_ci_profile_selects_the_heavy_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBCACHE_TEST_PROFILE", "ci")
    proc = run_python(["-c", READ_PROFILE, str(TESTS)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    chosen, header = proc.stdout.splitlines()
    assert chosen == "ci heavy"
    assert header.endswith(", test profile ci")  # what tools/release.sh checks


CONFIGURE = """
import sys
sys.path.insert(0, sys.argv[1])
import conftest, pytest
try:
    conftest.pytest_configure(None)
except pytest.UsageError as exc:
    print(exc)
"""


def test_an_unknown_profile_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest_configure refuses it (a UsageError: pytest stops before collecting)."""
    monkeypatch.setenv("EMBCACHE_TEST_PROFILE", "CI")
    proc = run_python(["-c", CONFIGURE, str(TESTS)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "EMBCACHE_TEST_PROFILE='CI': the test profiles are 'default' and 'ci'\n"
    )


def _ci_commands() -> list[list[str]]:
    """The command lines of .ci/run, as words (continuation lines joined)."""
    text = (REPO / ".ci" / "run").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


@needs_source_tree
def test_ci_runs_the_heavy_settings_and_the_readme_command_as_is() -> None:
    """The sanitizer run and the release build's suites get the ci profile; the
    quickstart's pytest (the README's test command) runs the default one."""
    commands = _ci_commands()
    for script in ("tools/sanitize.sh", "tools/release.sh"):
        runs = [words for words in commands if script in words]
        assert runs, f".ci/run does not run {script}"
        for words in runs:
            assert words[:3] == ["EMBCACHE_TEST_PROFILE=ci", "bash", script], words
    quickstart = [w for w in commands if w[:2] == ["bash", "-c"] and "pytest" in w[2]]
    assert len(quickstart) == 1 and "EMBCACHE_TEST_PROFILE" not in " ".join(quickstart[0])
    # release.sh checks that each suite ran the profile it passes on
    release = (REPO / "tools" / "release.sh").read_text(encoding="utf-8")
    assert "profile=${EMBCACHE_TEST_PROFILE:-default}" in release
    assert "test profile $profile" in release


@needs_source_tree
def test_the_sanitizer_run_covers_the_shared_segment() -> None:
    """tools/sanitize.sh builds and checks both extensions instrumented and runs
    tests/shared whole: nothing of it ignored or deselected, and none of its tests
    marked slow (the run leaves out the slow marker)."""
    script = (REPO / "tools" / "sanitize.sh").read_text(encoding="utf-8")
    assert 'for so in "$src"/embcache/_core.*.so "$src"/embcache/shared/_segment.*.so' in script
    pytest_line = script[script.rindex("python -m pytest") :]
    assert '-m "not slow"' in pytest_line
    assert "tests/shared" not in pytest_line
    marked = [
        p.name
        for p in (REPO / "tests" / "shared").glob("test_*.py")
        if "mark.slow" in p.read_text(encoding="utf-8")
    ]
    assert not marked, f"slow tests in tests/shared would not run under ASan: {marked}"
