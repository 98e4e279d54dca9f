"""The "Many workers on one host" recipes of docs/operations/shared.md and the tools
that measure them: the Gunicorn configuration's hooks run as Gunicorn runs them
(master opens the segment, forked workers use it, on_exit removes the name);
tools/shared_warm.py (a spawn Pool: every distinct text embedded once in total, a
cold Pool warm at once) and tools/shared_scaling.py (ratios, load, verdict) run end
to end at small sizes. The Pool recipe itself runs in tests/project/test_docs_examples.py."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, needs_source_tree, run_python
from forking import fork_and_run
from segments import fresh_segment_name, key_of, vector_of

from embcache import SharedEmbeddingCache

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
    needs_source_tree,  # the docs page and tools/ sit beside the tests
]

PAGE = REPO / "docs" / "operations" / "shared.md"


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


def gunicorn_config() -> str:
    """The page's gunicorn.conf.py block."""
    text = PAGE.read_text(encoding="utf-8")
    found = re.findall(
        r"```python \{\.no-run\}\n(# gunicorn -c gunicorn\.conf\.py.*?)```", text, re.S
    )
    assert len(found) == 1, "docs/operations/shared.md has no (or two) gunicorn.conf.py blocks"
    return found[0]


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)


def test_the_gunicorn_recipe_hooks_work_as_gunicorn_calls_them(segment_name: str) -> None:
    config: dict[str, Any] = {}
    exec(compile(gunicorn_config(), str(PAGE), "exec"), config)
    assert config["workers"] == 4 and config["preload_app"] is True
    config["SEGMENT"] = segment_name  # the hooks read the name at call time
    server = types.SimpleNamespace(log=Log())
    # the master: preload_app imports the application, which opens the segment
    app_cache = SharedEmbeddingCache(segment_name, 4096, None, 16, dim=8)
    app_cache.put(key_of(0), vector_of(0, 8))

    def worker(i: int) -> bool:
        config["post_fork"](server, types.SimpleNamespace(pid=os.getpid()))
        # the inherited object as is: what the master stored, and a vector of its own
        ok = app_cache.get(key_of(0)).tobytes() == vector_of(0, 8).tobytes()
        app_cache.put(key_of(i), vector_of(i, 8))
        return ok and server.log.lines == [f"worker {os.getpid()} uses segment {segment_name}"]

    assert [fork_and_run(lambda i=i: worker(i)) for i in (1, 2)] == [0, 0]
    assert len(app_cache) == 3  # the workers' puts went to the one segment
    assert os.path.exists(app_cache.path)
    config["on_exit"](server)
    assert not os.path.exists(app_cache.path)
    assert app_cache.get(key_of(2)).tobytes() == vector_of(2, 8).tobytes()  # still mapped
    app_cache.close()


def load_tool(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shm_names() -> set[str]:
    return set(os.listdir("/dev/shm"))


def test_shared_warm_embeds_each_text_once_and_a_cold_pool_is_warm_at_once(
    tmp_path: Path,
) -> None:
    before = shm_names()
    args = ["--requests", "24", "--batch", "8", "--distinct", "40", "--model-ms", "0"]
    proc = run_python(
        [str(REPO / "tools" / "shared_warm.py"), *args, "--dim", "16"], cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "every distinct text embedded once in total: True" in out, out
    cold = out[out.index("a cold Pool of 4") :].splitlines()[2:6]
    assert len(cold) == 4, out
    for line in cold:
        fields = line.split()
        hits, keys = fields[-2].split("/")
        assert hits == keys == "8" and fields[-1] == "0", line  # all hits, no model call
    assert not {n for n in shm_names() - before if n.startswith("embcache-warm-")}


def test_shared_scaling_prints_ratios_goals_load_and_a_verdict(tmp_path: Path) -> None:
    before = shm_names()
    args = ["--rounds", "1", "--seconds", "0.1", "--keys", "600", "--dim", "16"]
    proc = run_python(
        [str(REPO / "tools" / "shared_scaling.py"), *args, "--idle-sample", "0.1"],
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for label, goal in (("all gets", "1.8"), ("90% get / 10% put", "1.6")):
        assert re.search(
            rf"^{re.escape(label)} +1 process .* ratio \d+\.\d\dx .* goal >= {goal}x: "
            r"(met|MISSED)$",
            out,
            re.M,
        ), out
    assert re.search(r"^load average \(1 min\) before the run \d+\.\d\d on \d+ cores", out, re.M)
    assert re.search(r"^VERDICT: ", out, re.M), out
    assert "busiest stripe's share" in out
    assert not {n for n in shm_names() - before if n.startswith("embcache-scaling-")}


def test_the_scaling_verdict_says_when_the_figure_means_nothing() -> None:
    verdict = load_tool("shared_scaling").verdict
    assert "NOT meaningful" in verdict(2, 2.4, [0, 1])  # the load average leaves no core free
    assert "NOT meaningful" in verdict(2, 1.6, [2, 2])  # round(0.4): none free
    assert "NOT meaningful" in verdict(2, 0.2, [0, 0])  # no core idle before any round
    assert "NOT a meaningful" in verdict(4, 0.5, [2, 1])  # a round with one free core
    # the idle samples judge: a load average still counting work ended before the
    # tool started (0.9 on 2 cores) does not overrule 2 free cores before every round
    assert verdict(2, 0.9, [2, 2]).startswith("VERDICT: 2 free cores before every round")
    assert verdict(2, 0.3, [2, 2]).startswith("VERDICT: 2 free cores before every round")


def test_busiest_stripe_share_is_at_least_the_even_share() -> None:
    share = load_tool("shared_scaling").busiest_stripe_share
    shares = share(8, draws=2)
    assert shares and all(1 / 8 <= s <= 1 for s in shares.values()), shares
    assert np.isclose(share(1, draws=1)["zipf"], 1.0)
