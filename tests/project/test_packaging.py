"""Packaging: what a user of the sdist or a wheel gets (see tools/release.sh for
the build itself): the import guard, the suite's own settings, the metadata."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PACKAGE_PARENT, REPO, needs_source_tree, run_python

INSTALLED = PACKAGE_PARENT / "embcache"


def _copy_package_without_core(dest: Path, *, with_pyx: bool) -> None:
    """The package's Python files in dest/embcache, but no compiled core."""
    target = dest / "embcache"
    shutil.copytree(
        INSTALLED,
        target,
        ignore=shutil.ignore_patterns("_core*.so", "_core*.pyd", "__pycache__", "*.pyx"),
    )
    if with_pyx:
        (target / "_core.pyx").write_text("# the source of the core\n", encoding="utf-8")


def _import_from(folder: Path) -> subprocess.CompletedProcess[str]:
    """``python -S -c 'import embcache'`` in `folder`, which comes first on sys.path
    (-S: no site-packages, so no installed or editable embcache can answer instead;
    the guard runs before anything else is imported)."""
    return subprocess.run(
        [sys.executable, "-S", "-c", "import embcache"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_import_from_an_unbuilt_source_tree_says_what_to_run(tmp_path: Path) -> None:
    _copy_package_without_core(tmp_path, with_pyx=True)
    proc = _import_from(tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: embcache._core is not built: ")
    assert "is embcache's source tree" in last
    assert "Run from outside the source tree" in last
    assert "pip install -e ." in last and "python setup.py build_ext --inplace" in last


def test_import_of_an_incomplete_install_says_so(tmp_path: Path) -> None:
    _copy_package_without_core(tmp_path, with_pyx=False)
    proc = _import_from(tmp_path)
    assert proc.returncode == 1
    assert "the installation is incomplete; reinstall embcache" in proc.stderr


def test_slow_marker_registered_wherever_the_suite_runs(pytestconfig: pytest.Config) -> None:
    # conftest registers it, so a copy of tests/ without pyproject.toml knows it too
    assert any(line.startswith("slow:") for line in pytestconfig.getini("markers"))
    if pytestconfig.inipath is None:  # no pyproject.toml: conftest makes warnings errors
        assert "error" in pytestconfig.getini("filterwarnings")


@needs_source_tree
def test_metadata_license_and_build_floor() -> None:
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["license"] == "MIT"  # SPDX string (PEP 639)
    assert meta["project"]["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    # setuptools 77 is the first to read an SPDX license string
    assert "setuptools>=77" in meta["build-system"]["requires"]
    floors = [d for d in meta["project"]["dependencies"] if d.startswith("numpy")]
    assert floors == ["numpy>=1.23"]  # tools/release.sh tests the oldest Python on 1.23.0
    for tool in ("ruff", "mypy", "pytest"):
        spec = next(
            d for d in meta["project"]["optional-dependencies"]["test"] if d.startswith(tool)
        )
        assert "<" in spec, f"{spec}: pin the test tools to the range CI runs"


@needs_source_tree
def test_manifest_ships_the_tests_and_not_generated_c() -> None:
    manifest = (REPO / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    for line in (
        "graft tests",
        "graft benchmarks",
        "graft tools",
        "recursive-include embcache *.h",
    ):
        assert line in manifest
    assert any(line.startswith("global-exclude *.c ") for line in manifest)
    assert "include LICENSE README.md pyproject.toml setup.py asv.conf.json MANIFEST.in" in manifest


def test_the_package_ships_no_benchmark_only_module(tmp_path: Path) -> None:
    """Every module of embcache/cli (as installed, or in the source tree) is one that
    ``embcache check --compare`` imports: code only the benchmarks use (hit-rate
    traces, the peers' put/get adapter) lives in benchmarks/, outside the wheel."""
    import embcache.cli

    folder = Path(embcache.cli.__file__).parent
    present = {f"embcache.cli.{p.stem}" for p in folder.glob("*.py")} - {"embcache.cli.__init__"}
    # what the command loads: its module, and the comparison it imports for --compare
    code = (
        "import sys, embcache.cli.cli, embcache.cli.compare; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('embcache.cli.'))))"
    )
    proc = run_python(["-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert present == set(proc.stdout.split())
