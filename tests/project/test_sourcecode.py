"""Lint and type checks as part of the suite: ruff over the code, tests,
benchmarks and tools; mypy (strict, from pyproject.toml) over the package; stubtest of the
typed surfaces of the Cython extensions (the core, the shared segment) against the built
modules."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
from conftest import needs_source_tree, run_python

ROOT = Path(__file__).resolve().parents[2]
ALLOWLIST = Path(__file__).resolve().parents[1] / "stubtest_allowlist.txt"

# ruff and mypy read the sources and pyproject.toml; stubtest reads the .pyi in the
# source tree's configuration (an installed wheel's tests skip all three, saying why)
pytestmark = needs_source_tree


def run_tool(
    module: str, *args: str, cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(
            f"{module} is not installed (the test extra installs mypy on Python >= 3.10 only)"
        )
    return run_python(["-m", module, *args], cwd=cwd, timeout=timeout)


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"\n{result.stdout}\n{result.stderr}"


def test_ruff() -> None:
    paths = [p for p in ("embcache", "tests", "benchmarks", "tools") if (ROOT / p).exists()]
    assert_clean(run_tool("ruff", "check", "--no-cache", "--output-format", "concise", *paths))


@pytest.mark.slow
def test_mypy() -> None:
    assert_clean(run_tool("mypy", "embcache"))


@pytest.mark.slow
def test_stubtest(tmp_path: Path) -> None:
    # outside the source tree: each stub is checked against the compiled module the
    # tests imported (with the .pyi that sits beside it)
    assert_clean(
        run_tool(
            "mypy.stubtest",
            "embcache._core",
            "embcache.shared._segment",
            "--allowlist",
            str(ALLOWLIST),
            cwd=tmp_path,
        )
    )
