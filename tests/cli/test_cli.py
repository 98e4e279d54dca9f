"""Tests of the ``embcache check`` command (embcache/cli/cli.py and the
modules it runs; embcache/__main__.py for ``python -m embcache``).

Every run uses ``--quick``; timings are never asserted beyond the criteria's
own floors, which the command itself checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import importlib.metadata
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import by_profile, needs_source_tree, run_python

import embcache
from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, SyncEmbeddingCache, __version__
from embcache.cli import cli, compare, concurrency, redis_compare, report, snapshot_bandwidth
from embcache.cli.cli import main
from embcache.cli.criteria import MIN_RATIO_DIM
from embcache.cli.peers import LOOPS, MAPPING_LOOPS, PEERS, available_peers, make_mapping
from embcache.cli.text import table
from embcache.cli.workloads import comparison_inputs

REPO = Path(__file__).resolve().parents[2]

CRITERIA_NAMES = {
    1: "put throughput",
    2: "get throughput",
    3: "memory estimation accuracy",
    4: "concurrent access scales",
    5: "10k-entry insert time",
    6: "1k lookups on 10k entries",
    7: "memory stays within limits",
}
FIGURE_KEYS = {
    "put_new",
    "get_hit",
    "put_full",
    "get_miss",
    "bytes_per_entry",
    "await_overhead",
    "key_create",
}


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """Call main(argv) in-process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def flat(text: str) -> str:
    """`text` with every run of whitespace made one space (undoes the report's wrapping)."""
    return " ".join(text.split())


def table_rows(text: str) -> list[str]:
    """The rows of the criteria table (after its header and rule, up to a blank line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#  criterion"))
    rows: list[str] = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line)
    return rows


def criterion_rows(table: str) -> dict[int, str]:
    """The first table row of each criterion, by number."""
    rows: dict[int, str] = {}
    for line in table_rows(table):
        head = line.split(" ", 1)[0]
        if head.isdigit() and int(head) in CRITERIA_NAMES:
            rows[int(head)] = line
    return rows


@pytest.fixture(scope="module", autouse=True)
def no_redis_rows() -> Iterator[None]:
    """--compare here without its Redis rows (they need a server and seconds of
    peers; tests/tier/test_redis_tier.py covers them)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(redis_compare, "available_contenders", lambda: [])
        yield


@pytest.fixture(scope="module")
def compare_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any]]:
    """One quick run with --compare and --json PATH, shared by several tests."""
    path = tmp_path_factory.mktemp("check") / "report.json"
    code, out, _ = run_main(["check", "--quick", "--compare", "--json", str(path)])
    return code, out, json.loads(path.read_text(encoding="utf-8"))


def test_python_m_embcache_check_quick_passes(tmp_path: Path) -> None:
    proc = run_python(["-m", "embcache", "check", "--quick"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = criterion_rows(proc.stdout)
    assert sorted(rows) == list(CRITERIA_NAMES)
    for number, name in CRITERIA_NAMES.items():
        assert name in rows[number]
    assert "FAIL" not in proc.stdout
    assert "RESULT: PASS (7/7 criteria pass)" in proc.stdout
    for header in ("criterion", "threshold", "measured", "verdict"):
        assert header in proc.stdout.splitlines()[2]
    # progress: one line per criterion on stderr (not a terminal here)
    for number, name in CRITERIA_NAMES.items():
        assert f"[{number}/7] {name}" in proc.stderr


def test_main_console_entry_quick_passes() -> None:
    code, out, err = run_main(["check", "--quick"])
    assert code == 0, out + err
    rows = table_rows(out)
    assert len(rows) >= 7
    # one line per criterion and per check, each ending with its verdict (nothing wraps)
    verdicts = [line.rstrip().rsplit(" ", 1)[-1] for line in rows]
    assert set(verdicts) == {"PASS"}, rows
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "FAIL" not in "\n".join(rows)
    assert len(criterion_rows(out)) == 7
    assert "ns per op" in out and "asyncio tasks" in out and "OS threads" in out
    assert "[7/7] memory stays within limits" in err


@needs_source_tree
def test_console_script_declared() -> None:
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["scripts"]["embcache"] == "embcache.cli.cli:main"
    # the wheel ships every subpackage (the console script needs embcache.cli)
    assert meta["tool"]["setuptools"]["packages"]["find"]["include"] == ["embcache", "embcache.*"]


def _installed_distribution() -> importlib.metadata.Distribution | None:
    """The embcache distribution the tests imported, if it was installed (not an
    in-place build, which has no metadata)."""
    try:
        dist = importlib.metadata.distribution("embcache")
    except importlib.metadata.PackageNotFoundError:
        return None
    files = dist.files or []
    init = next((f for f in files if f.as_posix() == "embcache/__init__.py"), None)
    if (
        init is None
        or Path(str(dist.locate_file(init))).resolve() != Path(embcache.__file__).resolve()
    ):
        return None
    return dist


def test_installed_console_script_runs(tmp_path: Path) -> None:
    """The installed package declares the console script, ships what it imports,
    and the script on PATH (beside the interpreter) runs."""
    dist = _installed_distribution()
    if dist is None:
        pytest.skip("embcache is not installed (an in-place build has no console script)")
    scripts = [ep for ep in dist.entry_points if ep.group == "console_scripts"]
    assert [(ep.name, ep.value) for ep in scripts] == [("embcache", "embcache.cli.cli:main")]
    shipped = {f.as_posix() for f in dist.files or []}
    assert {"embcache/cli/cli.py", "embcache/py.typed", "embcache/_core.pyi"} <= shipped
    assert not [f for f in shipped if f.endswith(".c")], "generated C shipped in the wheel"
    script = Path(sys.executable).parent / "embcache"
    proc = subprocess.run(
        [str(script), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"embcache {__version__}"


def test_compare_and_its_peers_load_only_when_asked(tmp_path: Path) -> None:
    """A plain ``embcache check`` imports neither the comparison, its peer loops nor
    its Redis rows; asking for the installed peers (as ``--compare`` does) loads them."""
    code = (
        "import sys, embcache.cli.cli as cli\n"
        "def loaded(): return sorted(m for m in sys.modules if m.startswith('embcache.cli.'))\n"
        "print(' '.join(loaded()))\n"
        "cli.available_peers()\n"
        "print(' '.join(loaded()))\n"
    )
    proc = run_python(["-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    before, after = (set(line.split()) for line in proc.stdout.splitlines())
    lazy = {f"embcache.cli.{m}" for m in ("compare", "peers", "redis_compare", "redis_peers")}
    assert "embcache.cli.criteria" in before and not before & lazy
    assert "embcache.cli.peers" in after


def test_json_to_stdout_parses_and_has_fields() -> None:
    code, out, err = run_main(["check", "--quick", "--json", "-", "--dim", "384"])
    assert code == 0, err
    data = json.loads(out)  # stdout holds only the JSON; the table went to stderr
    assert "RESULT: PASS" in err
    assert data["passed"] is True and data["verdict"] == "PASS" and data["exit_code"] == 0
    assert data["config"]["quick"] is True and data["config"]["dim"] == 384
    machine = data["machine"]
    for field in ("platform", "python", "numpy", "embcache", "cpu_count"):
        assert field in machine
    assert machine["embcache"] == __version__
    assert [c["number"] for c in data["criteria"]] == list(CRITERIA_NAMES)
    for crit in data["criteria"]:
        assert crit["name"] == CRITERIA_NAMES[crit["number"]]
        assert crit["verdict"] == "PASS" and crit["passed"] is True
        assert crit["checks"]
        for chk in crit["checks"]:
            assert {"label", "threshold", "measured", "verdict", "value", "limit"} <= set(chk)
            assert chk["verdict"] == "PASS"
    assert data["comparison"] is None
    accuracy = data["criteria"][2]["details"]
    assert accuracy["exact"] is True
    assert accuracy["memory_usage_bytes"] == 100 * (384 * 4 + accuracy["entry_overhead_bytes"])
    scaling = data["criteria"][3]["details"]
    assert set(scaling["asyncio_ns_per_op"]) == {"1", "2", "4", "8", "16"}
    assert set(scaling["threads_ns_per_op"]) == {"1", "2", "4", "8", "16"}


def test_compare_quick_runs(compare_report: tuple[int, str, dict[str, Any]]) -> None:
    code, out, data = compare_report
    assert code == 0
    assert "comparison at dim 768" in out
    assert "does not change the exit code" in flat(out)
    cmp = data["comparison"]
    assert cmp["goals_affect_exit_code"] is False
    assert cmp["peers"] == available_peers()
    assert set(cmp["missing_peers"]) == set(PEERS) - set(available_peers())
    figures = {f["key"]: f for f in cmp["figures"]}
    assert FIGURE_KEYS <= set(figures)
    for key in FIGURE_KEYS:
        fig = figures[key]
        assert fig["embcache"] > 0 or key == "await_overhead"
        assert fig["goal_verdict"] in ("PASS", "FAIL", "n/a")
    assert (
        figures["bytes_per_entry"]["embcache"]
        == data["criteria"][2]["details"]["entry_overhead_bytes"]
    )


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_compare_measures_each_installed_peer(
    peer: str, compare_report: tuple[int, str, dict[str, Any]]
) -> None:
    if peer not in available_peers():
        pytest.skip(f"{peer} is not installed")
    _, out, data = compare_report
    section = out.split("comparison at dim", 1)[1].splitlines()
    header = next(line for line in section if line.startswith("figure "))
    assert peer in header  # a table column
    for fig in data["comparison"]["figures"]:
        if fig["goal_kind"] == "ratio":
            assert fig["peers"][peer] > 0
            assert fig["ratio"] is not None
            assert fig["best_peer"] in data["comparison"]["peers"]


def test_compare_without_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compare, "available_peers", lambda: [])
    code, out, err = run_main(["check", "--quick", "--compare", "--json", "-"])
    assert code == 0, err
    cmp = json.loads(out)["comparison"]
    assert cmp["peers"] == [] and set(cmp["missing_peers"]) == set(PEERS)
    for fig in cmp["figures"]:
        if fig["goal_kind"] == "ratio":
            assert fig["ratio"] is None and fig["goal_verdict"] == "n/a"


def test_compare_goal_failures_do_not_change_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    impossible = {k: dataclasses.replace(g, goal=0.0) for k, g in compare.GOALS.items()}
    monkeypatch.setattr(compare, "GOALS", impossible)
    monkeypatch.setattr(compare, "available_peers", lambda: available_peers()[:1])
    code, out, err = run_main(["check", "--quick", "--compare"])
    assert code == 0, err
    goal_lines = out.split("comparison at dim", 1)[1]
    assert "MISSED" in goal_lines
    assert "RESULT: PASS" in out


def test_failing_criterion_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(concurrency, "SCALING_FACTOR", 0.0)  # no per-op ratio can be <= 0
    code, out, err = run_main(["check", "--quick"])
    assert code == 1, out + err
    row = criterion_rows(out)[4]
    assert row.rstrip().endswith("FAIL")
    assert "RESULT: FAIL" in out and "failed: 4" in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["frobnicate"], "'frobnicate'"),
        (["--bogus"], "--bogus"),
        (["check", "--bogus"], "--bogus"),
        (["check", "--dim", "0"], "--dim"),
        (["check", "--dim", "abc"], "--dim"),
        (["check", "--dim", str(2**20 + 1)], "--dim"),
        (["check", "--json"], "--json"),
        (["check", "extra"], "extra"),
        (["check", "--quick=yes"], "--quick"),
    ],
)
def test_bad_arguments_exit_2_with_usage_naming_the_argument(argv: list[str], named: str) -> None:
    code, out, err = run_main(argv)
    assert code == 2
    assert "usage: embcache" in err
    assert out == ""
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and named in error_lines[0], err
    assert "Traceback" not in err


def test_embcache_alone_prints_help_and_exits_0() -> None:
    code, out, err = run_main([])
    assert code == 0 and err == ""
    assert out.startswith("usage: embcache")
    assert "check" in out and "--version" in out


def test_version() -> None:
    code, out, err = run_main(["--version"])
    assert code == 0 and err == ""
    assert out == f"embcache {__version__}\n"


def test_report_fits_100_columns_and_wide_does_not_wrap() -> None:
    code, out, err = run_main(["check", "--quick", "--compare"])
    assert code == 0, err
    too_wide = [line for line in out.splitlines() if len(line) > 100]
    assert too_wide == []
    code, wide, err = run_main(["check", "--quick", "--compare", "--wide"])
    assert code == 0, err
    assert max(len(line) for line in wide.splitlines()) > 100  # the long rows, unwrapped
    # the same rows and words either way
    assert len(criterion_rows(wide)) == len(criterion_rows(out)) == 7
    assert flat(wide.split("what each criterion measures:")[1].split("concurrent access:")[0]) == (
        flat(out.split("what each criterion measures:")[1].split("concurrent access:")[0])
    )


def test_wrapped_table_keeps_columns_aligned() -> None:
    lines = table(
        ["#", "criterion", "measured", "verdict"],
        [["1", "a rather long label " * 6, "12,345 ops/s", "PASS"], ["", "    short", "1", "PASS"]],
        set(),
        width=60,
    )
    assert all(len(line) <= 60 for line in lines)
    assert lines[2].startswith("1  a rather long") and lines[2].endswith("PASS")
    verdict_col = lines[0].index("verdict")
    assert all(line[verdict_col:] in ("PASS", "") for line in lines[2:])
    assert lines[-1].split()[:1] == ["short"] and lines[-1].startswith("       short")


def test_compare_without_peers_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compare, "available_peers", lambda: [])
    monkeypatch.setattr(cli, "available_peers", lambda: [])
    code, out, err = run_main(["check", "--quick", "--compare"])
    assert code == 0, err
    # progress: every criterion and every comparison step announces itself as it starts
    for step in [f"[{n}/7] " for n in range(1, 8)] + [f"[compare {n}/5] " for n in range(1, 6)]:
        assert step in err
    for text in (err, out):
        assert "no peer cache is installed" in flat(text)
        assert "pip install cachebox lru-dict cachetools" in flat(text)
    assert all(len(line) <= 100 for line in (err + out).splitlines())
    assert cli.missing_peers_note(["cachetools"]) == (
        "--compare: cachebox, lru-dict not installed (compared with cachetools only); "
        + cli.PEERS_HINT
    )
    assert cli.missing_peers_note(list(PEERS)) is None


def test_dim_upper_bound_is_a_usage_error() -> None:
    code, out, err = run_main(["check", "--dim", str(2**20 + 1)])
    assert code == 2 and out == ""
    assert "--dim: must be <= 1,048,576 (2**20)" in err
    assert "Traceback" not in err


def _no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any measurement fail the test: usage errors come first."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("measured before the usage error")

    monkeypatch.setattr(cli, "run_check", refuse)
    monkeypatch.setattr(cli, "run_compare", refuse)
    monkeypatch.setattr(cli, "run_snapshot_check", refuse)


@pytest.mark.parametrize(
    ("where", "message"),
    [("missing/dir/x.json", "does not exist"), (".", "is a directory")],
)
def test_unusable_json_path_is_a_usage_error_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, message: str
) -> None:
    _no_measuring(monkeypatch)
    code, out, err = run_main(["check", "--quick", "--json", str(tmp_path / where)])
    assert code == 2 and out == ""
    assert "usage: embcache" in err and "Traceback" not in err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "--json" in error_lines[0] and message in error_lines[0]


def test_unusable_json_path_from_python_m(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "x.json"
    proc = run_python(["-m", "embcache", "check", "--json", str(target)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


# the largest: 80 KB rows by default; under EMBCACHE_TEST_PROFILE=ci, 400 KB rows (copied
# without the GIL), a run of about 25 s here
@pytest.mark.parametrize("dim", [3, 4096, by_profile(default=20_000, ci=100_000)])
def test_quick_passes_at_small_and_large_dims(dim: int) -> None:
    """Every cache the check builds has room for what its criterion puts at
    `dim` (budgets derive from dim*4 + ENTRY_OVERHEAD_BYTES), and a check that
    cannot hold at `dim` says why instead of failing the run. Speed floors are
    not what this test is about (at dim 100,000 a put copies 400 KB, and a busy
    2-core machine has measured 870 puts/s against the floor of 1,000): a timed
    check may fail, then with exit status 1; every other check must pass."""
    code, out, err = run_main(["check", "--quick", "--dim", str(dim), "--json", "-"])
    data = json.loads(out)
    assert data["config"]["dim"] == dim
    failed = [
        (crit["number"], chk["label"], chk["unit"])
        for crit in data["criteria"]
        for chk in crit["checks"]
        if chk["verdict"] == "FAIL"
    ]
    timed = [f for f in failed if f[2] in ("ops/s", "s") or f[0] == 4]  # rates, times, scaling
    assert failed == timed, err
    assert code == (1 if failed else 0) and data["passed"] is (not failed), err
    hits = [c for crit in data["criteria"] for c in crit["checks"] if c["unit"] == "hits"]
    assert hits and all(c["value"] == c["limit"] for c in hits)
    ratio = data["criteria"][2]["checks"][0]
    if dim < MIN_RATIO_DIM:
        assert ratio["verdict"] == "n/a" and ratio["applicable"] is False
        assert f"{ENTRY_OVERHEAD_BYTES} B overhead" in ratio["not_applicable_reason"]
        assert f"not applicable at dim {dim}" in err and "n/a" in err
    else:
        assert ratio["verdict"] == "PASS" and ratio["applicable"] is True
    assert data["criteria"][2]["checks"][1]["verdict"] == "PASS"  # exact bytes, any dim


def test_bad_arguments_exit_2_from_python_m(tmp_path: Path) -> None:
    proc = run_python(["-m", "embcache", "check", "--nope"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_help_exits_0() -> None:
    code, out, _ = run_main(["check", "--help"])
    assert code == 0
    for option in ("--quick", "--compare", "--json", "--dim"):
        assert option in out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_overwrites_line_on_a_terminal() -> None:
    tty = _Tty()
    progress = report.Progress(tty)
    progress.step("[1/7] put throughput")
    progress.step("[2/7] get throughput")
    progress.done()
    text = tty.getvalue()
    assert "\n" not in text
    assert text.count("\r") == 3 and "[2/7] get throughput ..." in text
    plain = io.StringIO()
    progress = report.Progress(plain)
    progress.step("[1/7] put throughput")
    progress.done()
    assert plain.getvalue() == "[1/7] put throughput ...\n"


def test_report_explains_criteria_and_goals_in_users_words(
    compare_report: tuple[int, str, dict[str, Any]],
) -> None:
    _, out, data = compare_report
    # nothing refers to documents or tasks a user cannot see
    help_code, help_out, _ = run_main(["check", "--help"])
    assert help_code == 0
    for text in (out, help_out, json.dumps(data)):
        assert "seed" not in text.lower()
        assert "DESIGN" not in text
    assert "performance goals" in help_out
    # every criterion says what it measures and what passes
    assert "what each criterion measures:" in out
    for crit in data["criteria"]:
        assert len(crit["description"]) > 40
        assert f"{crit['number']:>2} {crit['name']}: {flat(crit['description'])}" in flat(out)
    assert "stores per second of 768-dim vectors" in flat(out) and "more than 1,000/s" in out
    # every performance goal is named, with its bound, in the report itself
    goals = out.split("performance goals", 1)[1]
    for fig in data["comparison"]["figures"]:
        if fig["goal_kind"] == "info":
            assert fig["goal_text"] == "" and fig["goal_verdict"] == "n/a"
            continue
        assert fig["meaning"] and fig["goal_text"]
        assert f"{fig['label']}: {fig['meaning']}; goal: {fig['goal_text']}." in flat(goals)


def test_peer_loops_copy_in_and_out() -> None:
    assert set(LOOPS) == {"embcache", *PEERS}
    pairs = [(k, v.copy()) for k, v in comparison_inputs(8, 4).put_pairs]
    for name in available_peers():
        assert LOOPS[name] is MAPPING_LOOPS
        m = make_mapping(name, 10)
        MAPPING_LOOPS.puts(m, pairs)
        assert len(m) == 4
        key, vector = pairs[-1]
        stored = m[key]
        assert stored is not vector and (stored == vector).all()  # a private copy in
        vector += 1.0
        assert not (m[key] == vector).any()
        last = MAPPING_LOOPS.gets(m, [k for k, _ in pairs])
        assert isinstance(last, np.ndarray) and last is not m[key]  # a copy out
        assert (last == m[key]).all()
        assert MAPPING_LOOPS.gets(m, [pairs[0][0], CacheKey("absent", "m")]) is None
        matrix = MAPPING_LOOPS.get_matrix(m, [k for k, _ in pairs])
        assert isinstance(matrix, np.ndarray) and matrix.shape == (4, 8)
    cache = SyncEmbeddingCache(10, None, 1, dim=8)
    LOOPS["embcache"].puts(cache, pairs)
    last = LOOPS["embcache"].gets(cache, [k for k, _ in pairs])
    assert isinstance(last, np.ndarray) and (last == cache.get(pairs[-1][0])).all()
    matrix, found = LOOPS["embcache"].get_matrix(cache, [k for k, _ in pairs])  # type: ignore[misc]
    assert matrix.shape == (4, 8) and found.all()


@pytest.mark.parametrize("peer", ["embcache", *sorted(PEERS)])
def test_asv_peer_suite_runs_the_shared_loops(peer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One call of each bench_peers benchmark, in process: the asv suite runs
    (with the loops ``embcache check --compare`` times) for every contender."""
    if peer != "embcache" and peer not in available_peers():
        pytest.skip(f"{peer} is not installed")
    if not (REPO / "benchmarks" / "bench_peers.py").is_file():
        pytest.skip(f"the asv suite is not beside the tests ({REPO / 'benchmarks'})")
    monkeypatch.syspath_prepend(str(REPO))
    bench_peers = pytest.importorskip("benchmarks.bench_peers")
    # the suite memoizes filled caches per process: keep them for this test only
    monkeypatch.setattr(importlib.import_module("benchmarks._util"), "_MEMO", {})
    calls: list[str] = []
    real = dict(LOOPS)
    for name, loops in real.items():
        monkeypatch.setitem(
            LOOPS,
            name,
            dataclasses.replace(
                loops,
                puts=lambda c, p, f=loops.puts, n=name: (calls.append(f"{n}.puts"), f(c, p))[1],
                gets=lambda c, k, f=loops.gets, n=name: (calls.append(f"{n}.gets"), f(c, k))[1],
            ),
        )
    for cls, method in [
        (bench_peers.PutNew, "time_put_new"),
        (bench_peers.GetHit, "time_get_hit"),
        (bench_peers.GetMiss, "time_get_miss"),
        (bench_peers.PutFull, "time_put_full"),
    ]:
        bench = cls()
        bench.setup(peer)
        getattr(bench, method)(peer)
    assert calls == [f"{peer}.puts", f"{peer}.gets", f"{peer}.gets", f"{peer}.puts"]


# --- every path checked before the work; the usage of the command at fault ---


def _one_usage_error(err: str, argument: str, message: str) -> None:
    """`err` is check's usage and one error line naming `argument` and `message`."""
    assert err.startswith("usage: embcache check "), err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, err
    assert error_lines[0].startswith(f"embcache check: error: argument {argument}: "), err
    assert message in error_lines[0], err


@pytest.mark.parametrize(
    ("args", "argument", "message"),
    [
        (
            ["--snapshot-dir", "/nonexistent"],
            "--snapshot-dir",
            "folder /nonexistent does not exist",
        ),
        (["--snapshot-dir", "/proc"], "--snapshot-dir", "cannot make files in /proc"),
        (["--json", "/proc/x"], "--json", "cannot write /proc/x"),
        (["--json", "/dev/full"], "--json", "cannot write /dev/full: No space left on device"),
    ],
)
def test_unusable_paths_are_usage_errors_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, args: list[str], argument: str, message: str
) -> None:
    if args[1] == "/dev/full" and not os.path.exists(args[1]):
        pytest.skip("no /dev/full on this system")
    _no_measuring(monkeypatch)
    code, out, err = run_main(["check", "--quick", *args])
    assert code == 2 and out == ""
    _one_usage_error(err, argument, message)


def test_snapshot_dir_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_measuring(monkeypatch)
    a_file = tmp_path / "f"
    a_file.write_text("x", encoding="utf-8")
    code, out, err = run_main(["check", "--quick", "--snapshot-dir", str(a_file)])
    assert code == 2 and out == ""
    _one_usage_error(err, "--snapshot-dir", f"{a_file} is not a folder")


@pytest.mark.parametrize("named", [True, False])
def test_snapshot_folder_without_room_for_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool
) -> None:
    _no_measuring(monkeypatch)
    real = os.statvfs

    def one_mib_free(path: Any) -> Any:
        st = real(path)
        return type("statvfs", (), {"f_bavail": 2**20 // st.f_frsize, "f_frsize": st.f_frsize})

    monkeypatch.setattr(os, "statvfs", one_mib_free)
    if not named:
        monkeypatch.setattr(cli.tempfile, "gettempdir", lambda: str(tmp_path))
    code, out, err = run_main(
        ["check", "--quick", *(["--snapshot-dir", str(tmp_path)] if named else [])]
    )
    assert code == 2 and out == ""
    need = snapshot_bandwidth.scratch_bytes(True) / 2**20
    _one_usage_error(err, "--snapshot-dir", f"{tmp_path} has 1 MiB free")
    assert f"writes about {need:,.0f} MiB there" in err
    assert ("name another with --snapshot-dir" in err) is not named
    # the full run writes the peers' files too: more room
    assert snapshot_bandwidth.scratch_bytes(False) > 256 * 2**20 * 4


def test_unusable_path_from_python_m_fails_at_once_without_a_traceback(tmp_path: Path) -> None:
    for args, message in (
        (["--snapshot-dir", str(tmp_path / "nonexistent")], "does not exist"),
        (["--json", "/dev/full"], "No space left on device"),
    ):
        if args[1] == "/dev/full" and not os.path.exists("/dev/full"):
            continue
        proc = run_python(["-m", "embcache", "check", *args], cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        assert "[1/7]" not in proc.stderr  # no criterion started
        _one_usage_error(proc.stderr, args[0], message)


class _FillsUp(io.StringIO):
    """A file on a disk that fills up during the run: every write fails."""

    def write(self, s: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_json_file_that_cannot_be_written_after_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = cli._open_outputs
    target = tmp_path / "report.json"
    target.write_text('{"an": "earlier report"}', encoding="utf-8")

    def open_then_fill(args: Any) -> Any:
        out = real_open(args)  # the checks, the file opened and its first byte written
        assert out is not None
        out._file.close()
        out._file = _FillsUp()
        return out

    monkeypatch.setattr(cli, "_open_outputs", open_then_fill)
    code, out, err = run_main(["check", "--quick", "--json", str(target)])
    assert code == 2
    assert "RESULT: " in out  # the report itself was printed
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"embcache check: error: could not write the JSON report to {target}: "
        "No space left on device"
    )
    # the earlier report is as it was, and nothing is left beside it
    assert target.read_text(encoding="utf-8") == '{"an": "earlier report"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_an_interrupted_run_keeps_an_earlier_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.json"
    target.write_text('{"an": "earlier report"}', encoding="utf-8")
    seen: list[list[str]] = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))  # opened: a partial file
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_check", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["check", "--quick", "--json", str(target)])
    assert len(seen[0]) == 2 and seen[0][0].startswith(".report.json.")
    assert target.read_text(encoding="utf-8") == '{"an": "earlier report"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_json_file_is_written_whole(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old contents, longer than nothing at all " * 100, encoding="utf-8")
    target.chmod(0o640)
    code, out, err = run_main(["check", "--quick", "--json", str(target)])
    assert code in (0, 1), err  # (a timed criterion may fail on a loaded machine)
    data = json.loads(target.read_text(encoding="utf-8"))
    assert data["exit_code"] == code and len(data["criteria"]) == 7
    assert target.stat().st_mode & 0o777 == 0o640  # a replaced report keeps its mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    new = tmp_path / "new.json"
    umask = os.umask(0)
    os.umask(umask)
    code, out, err = run_main(["check", "--quick", "--json", str(new)])
    assert json.loads(new.read_text(encoding="utf-8"))["exit_code"] == code
    assert new.stat().st_mode & 0o777 == 0o666 & ~umask  # a new file's usual mode


@pytest.mark.parametrize(
    "argv", [["check", "--bogus"], ["check", "extra"], ["check", "--quick", "--nope=1"]]
)
def test_unknown_check_arguments_print_checks_usage(argv: list[str]) -> None:
    code, out, err = run_main(argv)
    assert code == 2 and out == ""
    assert err.startswith("usage: embcache check "), err
    assert err.splitlines()[-1] == (f"embcache check: error: unrecognized arguments: {argv[-1]}"), (
        err
    )


def test_unknown_top_level_argument_prints_the_top_level_usage() -> None:
    code, out, err = run_main(["--bogus"])
    assert code == 2 and out == ""
    assert err.startswith("usage: embcache [-h]"), err
    assert err.splitlines()[-1] == "embcache: error: unrecognized arguments: --bogus"


def test_json_to_dev_stdout_through_a_pipe(tmp_path: Path) -> None:
    """A path that is a pipe (here /dev/stdout, captured) is written at the end,
    after the table, as a shell's redirection would be."""
    proc = run_python(
        ["-m", "embcache", "check", "--quick", "--json", "/dev/stdout"], cwd=tmp_path, timeout=120
    )
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.splitlines()
    start = len(lines) - 1 - lines[::-1].index("{")
    assert "RESULT: " in "\n".join(lines[:start])  # the table first, then the whole report
    assert json.loads("\n".join(lines[start:]))["exit_code"] == proc.returncode
