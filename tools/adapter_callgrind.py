"""Instruction counts of the caches' calls with the zero-cost model
(benchmarks/real_workload.py's configurations), under valgrind's callgrind,
which a machine's load does not change:

    python tools/adapter_callgrind.py [--calls 2000]     # needs valgrind; ~5 minutes

One process runs every section in turn (a section: one configuration's hit or
miss, single query or batch of 64, repeated); instrumentation is off while
Python imports the frameworks, and the counters are zeroed before each section
and dumped after it (``callgrind_control``), so a section's count is its calls
alone. Beside the caches: the same public interface without a cache over the
zero-cost model (which converts its rows to lists of floats, as real
integrations do), over a constant vector (no model, no conversion), and the
list conversion itself (``tolist`` of one 384-float row, of 64 rows).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent

NAMES = [
    "CachedEmbedder",
    "no cache",
    "embcache LangChain adapter",
    "LangChain model, no cache",
    "LangChain constant, no cache",
    "embcache LlamaIndex adapter",
    "LlamaIndex model, no cache",
    "LlamaIndex constant, no cache",
]


def child(calls: int, folder: str) -> None:
    """The measured process: announce each section, wait for the controller's
    go, run it, announce its end, wait for the controller's dump."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    import real_workload as rw

    encode, version = rw.load_encoder("zero")
    configs = rw.configurations(encode, version)
    configs.update(rw.constant_models())
    batch = [c for d in rw.stdlib_documents(rw.BATCH) for c in d][: rw.BATCH]
    query = "Return a new frozenset object."
    row = np.full((1, rw.DIM), 0.05, dtype=np.float32)
    rows = np.full((rw.BATCH, rw.DIM), 0.05, dtype=np.float32)
    sections: list[tuple[str, Callable[[Any], Any], list[Any]]] = [
        ("tolist|one row", lambda _: row[0].tolist(), [None] * calls),
        ("tolist|64 rows", lambda _: rows.tolist(), [None] * (calls // 16)),
    ]
    for name in NAMES:
        config = configs[name]
        config.index(batch)
        config.query(query)
        sections.append((f"{name}|hit query", config.query, [query] * calls))
        sections.append((f"{name}|hit batch", config.index, [batch] * (calls // 16)))
        if "constant" in name:
            continue
        misses = [f"{query} ({name}, miss {i})" for i in range(calls // 4)]
        sections.append((f"{name}|miss query", config.query, misses))
        new = [[f"{t} ({name}, miss {i})" for t in batch] for i in range(calls // 64)]
        sections.append((f"{name}|miss batch", config.index, new))
    for i, (label, fn, args) in enumerate(sections):
        if "miss" not in label:
            fn(args[0])  # warm the code path
        print(f"ready {i} {len(args)} {label}", flush=True)
        while not os.path.exists(f"{folder}/go-{i}"):
            time.sleep(0.005)
        for a in args:
            fn(a)
        print(f"done {i}", flush=True)
        while not os.path.exists(f"{folder}/dumped-{i}"):
            time.sleep(0.005)


def control(calls: int) -> dict[str, float]:
    """Run the child under callgrind; instructions per call of each section."""
    folder = tempfile.mkdtemp(prefix="embcache-callgrind-")
    out = f"{folder}/callgrind.out"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, __file__, "--child", folder, "--calls", str(calls)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    assert proc.stdout is not None
    pid = str(proc.pid)
    per_call: dict[str, float] = {}

    def callgrind(*flags: str) -> None:
        subprocess.run(["callgrind_control", *flags, pid], check=True, capture_output=True)

    started = False
    label, n = "", 1
    for line in proc.stdout:
        words = line.split()
        if not words:
            continue
        if words[0] == "ready":
            i, n, label = words[1], int(words[2]), " ".join(words[3:])
            if not started:
                callgrind("-i", "on")
                started = True
            callgrind("-z")
            Path(f"{folder}/go-{i}").touch()
        elif words[0] == "done":
            i = words[1]
            before = set(glob.glob(f"{out}*"))
            callgrind("-d")
            (dump,) = set(glob.glob(f"{out}*")) - before
            found = re.search(r"^(?:summary|totals): (\d+)", Path(dump).read_text(), re.M)
            assert found, dump
            per_call[label] = int(found.group(1)) / n
            print(f"  {label}: {per_call[label]:,.0f} instructions per call", file=sys.stderr)
            Path(f"{folder}/dumped-{i}").touch()
    if proc.wait() != 0:
        raise SystemExit(f"the measured process failed ({proc.returncode})")
    return per_call


def table(per_call: dict[str, float]) -> str:
    tolist_row = per_call["tolist|one row"]
    tolist_batch = per_call["tolist|64 rows"] / 64

    def figure(name: str, what: str) -> float:
        value = per_call[f"{name}|{what}"]
        return value / 64 if what.endswith("batch") else value

    lines = [
        f"list conversion (`tolist`): {tolist_row:,.0f} instructions for one 384-float row, "
        f"{tolist_batch:,.0f} per row of 64",
        "",
        "| cache | interface | hit, per query | hit, per text of 64 | miss, per query "
        "| miss, per text of 64 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    frameworks = {
        "CachedEmbedder": ("no cache", None),
        "embcache LangChain adapter": ("LangChain model, no cache", "LangChain constant, no cache"),
        "embcache LlamaIndex adapter": (
            "LlamaIndex model, no cache",
            "LlamaIndex constant, no cache",
        ),
    }
    for name, (model, constant) in frameworks.items():
        gross = [figure(name, w) for w in ("hit query", "hit batch", "miss query", "miss batch")]
        lines.append(f"| {name} | (gross) | " + " | ".join(f"{g:,.0f}" for g in gross) + " |")
        if constant is None:
            continue
        base = [figure(model, w) for w in ("hit query", "hit batch", "miss query", "miss batch")]
        lines.append(
            f"| | − {model} | "
            + " | ".join(f"**{g - b:,.0f}**" for g, b in zip(gross, base))
            + " |"
        )
        const = [figure(constant, w) for w in ("hit query", "hit batch")]
        conv = [tolist_row, tolist_batch]
        lines.append(
            f"| | − {constant}, − the list conversion | "
            + " | ".join(f"**{g - c - t:,.0f}**" for g, c, t in zip(gross, const, conv))
            + " | | |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="single-query hits per section")
    parser.add_argument("--child", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.calls, args.child)
        return 0
    print(table(control(args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
