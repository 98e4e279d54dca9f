"""The asv dashboard's tools and configuration: tools/publish_offline.py's
suggestion to view the pages, tools/asv_history.sh, and asv.conf.json's one
environment (beside the tests in a clone or an unpacked sdist only)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import REPO, needs_source_tree

pytestmark = needs_source_tree

TOOLS = REPO / "tools"


def test_publish_offline_suggests_a_server_on_this_machine_only(tmp_path: Path) -> None:
    html_dir = tmp_path / "html dir"  # a space: the command must quote it
    html_dir.mkdir()
    (html_dir / "index.html").write_text("<html><body>no CDN here</body></html>\n")
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "publish_offline.py"), "--no-publish"]
        + ["--html-dir", str(html_dir), "--js-root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = proc.stdout.splitlines()[-1]
    assert "is self-contained" in said
    command = said.split("view it with: ", 1)[1].split(" (then open ", 1)[0]
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "http.server"]
    assert words[words.index("--bind") + 1] == "127.0.0.1"  # never every interface
    assert words[words.index("-d") + 1] == str(html_dir)
    assert said.endswith(f"(then open http://127.0.0.1:{words[-1]}/)")


def _asv_conf() -> dict[str, object]:
    raw = (REPO / "asv.conf.json").read_text(encoding="utf-8")
    raw = re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*', lambda m: m.group(1) or "", raw)
    conf: dict[str, object] = json.loads(re.sub(r",(\s*[}\]])", r"\1", raw))
    return conf


FAKE_ASV = r"""#!/usr/bin/env bash
# stands in for asv: logs each call (and the commits a HASHFILE names), publishes a page
echo "$*" >>"$LOG"
for arg; do
    case "$arg" in HASHFILE:*) sed 's/^/  commit /' "${arg#HASHFILE:}" >>"$LOG" ;; esac
done
if [ "$1" = publish ]; then mkdir -p .asv/html && echo '<html></html>' >.asv/html/index.html; fi
"""


def _project_with_commits(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    """A git repository holding the dashboard scripts and asv.conf.json, with
    `count` commits; returns it and its commits, newest first."""
    repo = tmp_path / "project"
    (repo / "tools").mkdir(parents=True)
    for name in ("tools/asv_history.sh", "tools/publish_offline.py", "asv.conf.json"):
        (repo / name).write_bytes((REPO / name).read_bytes())
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    for i in range(count):
        (repo / "n.txt").write_text(str(i))
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", f"commit {i}"], check=True)
    log = subprocess.run([*git, "rev-list", "HEAD"], capture_output=True, text=True, check=True)
    return repo, log.stdout.split()


def _run_history(
    repo: Path, tmp_path: Path, *args: str, machine: str = ""
) -> tuple[subprocess.CompletedProcess[str], str]:
    fake = tmp_path / "fake-asv"
    fake.write_text(FAKE_ASV)
    fake.chmod(0o755)
    log = tmp_path / "asv.log"
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ASV": str(fake),
        "LOG": str(log),
        "HISTORY_MACHINE": machine,
    }
    proc = subprocess.run(
        ["bash", str(repo / "tools" / "asv_history.sh"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, log.read_text() if log.exists() else ""


def test_asv_history_records_the_last_n_commits_in_one_environment_and_publishes(
    tmp_path: Path,
) -> None:
    repo, commits = _project_with_commits(tmp_path, 4)
    proc, calls = _run_history(repo, tmp_path, "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = calls.splitlines()
    assert lines[0] == "machine --yes"
    assert lines[1].startswith("run --skip-existing-successful --bench ^bench_peers\\. ")
    assert lines[1].split()[-1].startswith("HASHFILE:")
    assert lines[2:5] == [f"  commit {c}" for c in commits[:3]]  # the newest three
    assert lines[5] == "publish --config asv.conf.json"
    assert "--python" not in calls  # never the interpreter-named series of --python=same
    assert "--bind 127.0.0.1" in proc.stdout  # publish_offline's suggestion

    # fewer commits than asked: all of them; a machine name passes through
    proc, calls = _run_history(repo, tmp_path, "10", machine="dev")
    assert proc.returncode == 0 and calls.count("  commit ") == 3 + 4
    assert "machine --yes --machine dev\nrun --skip-existing-successful --machine dev " in calls


def test_asv_history_refuses_a_bad_count(tmp_path: Path) -> None:
    repo, _ = _project_with_commits(tmp_path, 1)
    for bad in ("0", "-1", "x", "07"):
        proc, calls = _run_history(repo, tmp_path, bad)
        assert proc.returncode == 2 and calls == ""
        assert f"N must be a whole number >= 1, got '{bad}'" in proc.stderr


def test_asv_config_defines_one_environment() -> None:
    """asv.conf.json's matrix has one value per requirement and no list of
    Pythons: asv builds one virtualenv (for the Python it runs with), so every
    commit asv_history.sh records lands in the same series of each graph."""
    conf = _asv_conf()
    assert conf["environment_type"] == "virtualenv"
    assert len(conf.get("pythons", [None])) == 1  # type: ignore[arg-type]
    matrix = conf["matrix"]
    assert isinstance(matrix, dict) and set(matrix) <= {"req", "env", "env_nobuild"}
    for values in (v for group in matrix.values() for v in group.values()):
        assert isinstance(values, list) and len(values) == 1, values
    assert "exclude" not in conf and "include" not in conf
