"""The test suite's own settings (tests/pytest.ini, and pyproject.toml's
[tool.pytest.ini_options] for a bare ``pytest`` in the repository root): in
force wherever the suite runs, a copy of tests/ included, and the same in both
files."""

from __future__ import annotations

import configparser
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import REPO, needs_source_tree, run_python

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent


def test_the_suite_settings_are_in_force(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.inipath is not None
    assert "error" in pytestconfig.getini("filterwarnings")
    assert any(line.startswith("slow:") for line in pytestconfig.getini("markers"))
    assert pytestconfig.option.strict_markers and pytestconfig.option.strict_config
    assert "a" in pytestconfig.option.reportchars.lower()  # -ra: the reasons for skips
    pytest.importorskip("pytest_asyncio")
    assert pytestconfig.getini("asyncio_mode") == "auto"
    assert pytestconfig.getini("asyncio_default_fixture_loop_scope") == "function"


def test_a_warning_fails_a_test() -> None:
    with pytest.raises(UserWarning, match="made an error"):
        warnings.warn("made an error by filterwarnings", UserWarning, stacklevel=1)


async def test_an_unmarked_async_test_runs() -> None:
    # without asyncio_mode = auto pytest refuses an unmarked coroutine test
    # ("async def functions are not natively supported"), as langchain-tests' are
    import asyncio

    assert await asyncio.sleep(0, "ran") == "ran"


def _ini_settings(path: Path) -> dict[str, list[str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    out: dict[str, list[str]] = {}
    for name, value in parser["pytest"].items():
        if name == "addopts":
            out[name] = shlex.split(value)
        else:
            out[name] = [line.strip() for line in value.strip().splitlines() if line.strip()]
    return out


@needs_source_tree
def test_pytest_ini_and_pyproject_hold_the_same_settings() -> None:
    try:
        import tomllib
    except ImportError:  # Python < 3.11: pytest's own dependency
        import tomli as tomllib
    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    section = dict(meta["tool"]["pytest"]["ini_options"])
    # where a bare `pytest` in the root looks; tests/pytest.ini is read inside tests/
    assert section.pop("testpaths") == ["tests"]
    toml = {k: v if isinstance(v, list) else [v] for k, v in section.items()}
    assert toml == _ini_settings(TESTS / "pytest.ini")


def _copy_of_tests(tmp_path: Path) -> Path:
    """A folder holding a copy of tests/ with this file, its conftest and settings."""
    copy = tmp_path / "tests"
    (copy / HERE.name).mkdir(parents=True)
    for name in ("pytest.ini", "conftest.py"):
        shutil.copy(TESTS / name, copy / name)
    shutil.copy(__file__, copy / HERE.name / Path(__file__).name)
    return copy


def test_a_copy_of_tests_runs_with_the_settings(tmp_path: Path) -> None:
    copy = _copy_of_tests(tmp_path)
    args = ["-m", "pytest", "-p", "no:cacheprovider", "-k", "not copy"]
    for cwd, where in ((tmp_path, ["tests/project/test_settings.py"]), (copy, [])):
        proc = run_python([*args, *where], cwd=cwd, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"rootdir: {copy}" in proc.stdout and "configfile: pytest.ini" in proc.stdout
        assert "3 passed, 1 skipped" in proc.stdout, proc.stdout


def test_a_bare_pytest_above_a_copy_says_how_to_run_it(tmp_path: Path) -> None:
    copy = _copy_of_tests(tmp_path)
    proc = run_python(["-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path, timeout=120)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert f"`pytest {copy}`" in proc.stderr and "Traceback" not in proc.stderr
    assert "passed" not in proc.stdout
