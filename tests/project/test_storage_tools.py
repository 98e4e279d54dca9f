"""tools/storage_speed.py and tools/storage_accuracy.py print pasteable Markdown
tables (ratios against float32 rows, a missed goal marked; the recall table) and
the command that made them; and benchmarks/bench_storage.py's figures run."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (REPO / "tools" / "storage_speed.py").is_file()
    or not (REPO / "benchmarks" / "bench_storage.py").is_file(),
    reason="the asv suites and tools/ are not beside the tests",
)

STORAGES = ["float32", "float16", "bfloat16", "int8"]


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(REPO))
    util = importlib.import_module("benchmarks._util")
    monkeypatch.setattr(util, "_MEMO", {})  # filled caches kept for this test only
    return importlib


def test_storage_speed_prints_ratios_marking_misses_and_the_memory_table(
    tools: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    speed = tools.import_module("tools.storage_speed")
    # every goal impossible but get hit's, which every run meets
    figures = {
        k: dataclasses.replace(f, goal=1e9 if k == "get_hit" else 0.0)
        for k, f in speed.FIGURES.items()
    }
    monkeypatch.setattr(speed, "FIGURES", figures)
    assert speed.main(["--runs", "2", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "| figure (ratio storage / float32 rows) | goal | float16, 2 runs | bfloat16, 2 runs "
        "| int8, 2 runs |"
    )
    assert lines[1] == "| --- | ---: | ---: | ---: | ---: |"
    rows = {line.split(" | ")[0][2:]: line.strip("|").split(" | ") for line in lines[2:5]}
    assert set(rows) == {f.title for f in figures.values()}
    for title, cells in rows.items():
        assert len(cells) == 5
        for c in cells[2:]:
            if title.startswith("get hit"):
                assert re.fullmatch(r"\d+\.\d\d-\d+\.\d\d", c.strip()), c
            else:
                assert re.fullmatch(r"\*\*\d+\.\d\d-\d+\.\d\d missed\*\*", c.strip()), c
    assert lines[5] == "" and lines[6].startswith("| best ns per operation (per row)")
    for line in lines[8:11]:
        assert all(float(c) > 0 for c in line.strip("|").split(" | ")[1:])
    memory = lines[12:18]
    assert memory[0].startswith("| storage (dim 768) | row bytes | memory per entry (bytes) |")
    table = {c[0].strip(): c for c in (line.strip("|").split(" | ") for line in memory[2:])}
    assert list(table) == STORAGES
    assert [table[s][1].strip() for s in STORAGES] == ["3,072", "1,536", "1,536", "772"]
    per_gib = {s: int(table[s][3].replace(",", "")) for s in STORAGES}
    assert table["float32"][4].strip() == "1.00"
    assert per_gib["float16"] >= 1.9 * per_gib["float32"]
    assert per_gib["int8"] >= 3.4 * per_gib["float32"]
    snapshot = {s: float(table[s][5].replace(",", "")) for s in STORAGES}
    assert snapshot["float32"] > 3072 and snapshot["int8"] < 0.5 * snapshot["float32"]
    assert lines[19].startswith(
        "`python tools/storage_speed.py --runs 2 --rounds 1`: 2 runs of 1 interleaved rounds"
    )
    from embcache._core import _codec_kernels

    assert f", {_codec_kernels()} codec kernels;" in lines[19]


def test_storage_speed_can_limit_the_codec_kernels(
    tools: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from embcache._core import _codec_kernels

    best = _codec_kernels()
    speed = tools.import_module("tools.storage_speed")
    assert speed.main(["--runs", "1", "--rounds", "1", "--kernels", "portable"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("`python tools/storage_speed.py --runs 1 --rounds 1 --kernels portable`")
    assert ": 1 run of 1 interleaved rounds" in last and ", portable codec kernels;" in last
    assert _codec_kernels() == best  # the limit is lifted again


def test_the_speed_tool_cell_marks_a_missed_goal() -> None:
    import sys

    saved = sys.path[:]  # restored whole: the tool puts the clone on the path itself too
    sys.path.insert(0, str(REPO))
    try:
        speed = importlib.import_module("tools.storage_speed")
    finally:
        sys.path[:] = saved
    assert speed.cell([1.02, 1.05], 1.1) == "1.02-1.05"
    assert speed.cell([1.02, 1.15, 1.3], 1.1) == "**1.02-1.30 missed in 2 of 3 runs**"
    assert speed.cell([1.3], 1.2) == "**1.30 missed**"


class HashModel:
    """A stand-in for the sentence-transformers model with the same ``encode``
    surface: each text's normalised vector from its SHA-256 (for the output
    format only; tests/adapters/test_storage_recall.py runs the real model)."""

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        assert kwargs["normalize_embeddings"] is True
        out = np.empty((len(texts), 32), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_storage_accuracy_prints_the_recall_table(
    tools: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    accuracy = tools.import_module("tools.storage_accuracy")
    monkeypatch.setattr(accuracy, "load_model", HashModel)
    assert accuracy.main(["--every", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "| storage | recall@10 vs float32 | min cosine(original, stored) | max abs error |",
        "| --- | ---: | ---: | ---: |",
    ]
    for line, storage in zip(lines[2:5], STORAGES[1:]):
        cells = line.strip("|").split(" | ")
        assert cells[0].strip() == storage
        assert 0.9 <= float(cells[1]) <= 1 and re.fullmatch(r"\d\.\d{4}", cells[1].strip())
        assert 0.999 <= float(cells[2]) <= 1 and re.fullmatch(r"\d\.\d{6}", cells[2].strip())
        assert 0 < float(cells[3]) < 0.01 and re.fullmatch(r"\d\.\de-\d\d", cells[3].strip())
    assert lines[5] == "" and lines[7] == ""
    assert re.fullmatch(
        r"Queries whose top 10 changed, and the largest float32 score gap between the 10th and "
        r"11th documents of one of them: float16 \d+, \d\.\de[-+]\d\d; bfloat16 \d+, "
        r"\d\.\de[-+]\d\d; int8 \d+, \d\.\de[-+]\d\d\.",
        lines[6],
    ), lines[6]
    assert lines[8].startswith("`python tools/storage_accuracy.py --every 20`: all-MiniLM-L6-v2")
    assert "(dim 32)" in lines[8] and "float32 through the cache: recall 1.0000" in lines[8]


def test_bench_storage_figures_run(tools: Any) -> None:
    bench = tools.import_module("benchmarks.bench_storage")
    for storage in STORAGES:
        for cls, method in [
            (bench.StorageGetHit, "time_get_hit"),
            (bench.StoragePut, "time_put"),
            (bench.StorageGetMany, "time_get_many"),
        ]:
            b = cls()
            b.setup(storage)
            getattr(b, method)(storage)
            assert b.cache.storage == storage and len(b.cache) >= bench.ENTRIES
    memory = bench.StorageMemory()
    assert memory.track_bytes_per_entry("int8") < memory.track_bytes_per_entry("float16")
    assert bench.StorageSnapshot().track_snapshot_bytes_per_entry("bfloat16") > 1536
