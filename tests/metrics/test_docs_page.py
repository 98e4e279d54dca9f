"""docs/operations/metrics.md stays true: its metric table is embcache.metrics.METRICS
row for row, and its runnable examples run (in order, one namespace)."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

from embcache.metrics import METRICS

PAGE = REPO / "docs" / "operations" / "metrics.md"
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)

# a copy of tests/ without the docs beside it (an installed package's tests) has no page
pytestmark = pytest.mark.skipif(not PAGE.is_file(), reason=f"{PAGE} is not here")


def test_the_table_lists_every_metric() -> None:
    rows = [line for line in PAGE.read_text().splitlines() if line.startswith("| `embcache_")]
    expected = [
        f"| `{m.sample}` | {'counter' if m.counter else 'gauge'} | `{m.label}` | `{m.otel}` "
        f"| `{m.unit}` | {m.help} |"
        for m in METRICS
    ]
    assert rows == expected


def test_the_runnable_examples_run() -> None:
    pytest.importorskip("prometheus_client")
    pytest.importorskip("opentelemetry.sdk")
    blocks = [(info.strip(), code) for info, code in FENCE.findall(PAGE.read_text())]
    assert [info for info, _ in blocks] == ["{.no-run}", "", ""]
    namespace: dict[str, object] = {"__name__": "docs_metrics"}
    for info, code in blocks:
        compiled = compile(code, str(PAGE), "exec")  # the FastAPI one too: valid Python
        if info != "{.no-run}":
            exec(compiled, namespace)
