"""What the row codecs cost per row at dim 768: encode_rows and decode_rows of a
(1000, 768) batch per storage, with the CPU's kernels and with the portable C
forced.

    python tools/codec_cost.py              # wall clock, ns per row (best and median)
    python tools/codec_cost.py --callgrind  # instructions per row under callgrind

The wall clock times each (storage, kernels, direction) 40 times, interleaved
round by round so the machine's load falls on all alike. Under callgrind each
case runs 2 and 22 batches in fresh processes (PYTHONHASHSEED=0); the
difference over 20 batches of 1000 rows is the cost of one row (imports and
setup cancel out). valgrind
does not run AVX-512, so there the CPU's kernels are AVX2 + F16C.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STORAGES = ("float32", "float16", "bfloat16", "int8")
ROWS, DIM = 1000, 768

CHILD = r"""
import sys
import numpy as np
from embcache._core import _force_portable_kernels, decode_rows, encode_rows
storage, portable, direction, batches = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
_force_portable_kernels(portable == "1")
x = np.random.default_rng(0).standard_normal((1000, 768)).astype(np.float32)
e = encode_rows(x, storage)
out = np.empty_like(x)
for _ in range(batches):
    if direction == "encode":
        encode_rows(x, storage)
    else:
        decode_rows(e, storage, 768, out)
"""


def instructions(storage: str, portable: bool, direction: str, batches: int) -> int:
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", CHILD, storage, "1" if portable else "0", direction, str(batches)],
        capture_output=True, text=True, check=True, cwd=ROOT,
        # the same start-up in every run; no BLAS threads spinning (counted by callgrind)
        env={**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", proc.stderr)
    assert found, proc.stderr[-2000:]
    return int(found.group(1))


def callgrind() -> None:
    print(f"instructions per row, dim {DIM} (callgrind; CPU kernels = AVX2 + F16C under valgrind)")
    print(
        f"{'storage':9s} {'encode cpu':>11s} {'encode C':>9s} {'decode cpu':>11s} {'decode C':>9s}"
    )
    for storage in STORAGES:
        cells = []
        for direction in ("encode", "decode"):
            for portable in (False, True):
                per = instructions(storage, portable, direction, 22)
                per -= instructions(storage, portable, direction, 2)
                cells.append(per / (20 * ROWS))
        print(f"{storage:9s} {cells[0]:11.0f} {cells[1]:9.0f} {cells[2]:11.0f} {cells[3]:9.0f}")


def wall(rounds: int = 40) -> None:
    from embcache._core import _codec_kernels, _force_portable_kernels, decode_rows, encode_rows

    x = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32)
    encoded = {s: encode_rows(x, s) for s in STORAGES}
    out = np.empty_like(x)
    cases = [(s, p, d) for s in STORAGES for p in (False, True) for d in ("encode", "decode")]
    times: dict[tuple[str, bool, str], list[float]] = {c: [] for c in cases}
    best = _codec_kernels()
    for _ in range(rounds):
        for storage, portable, direction in cases:
            _force_portable_kernels(portable)
            t0 = time.perf_counter_ns()
            if direction == "encode":
                encode_rows(x, storage)
            else:
                decode_rows(encoded[storage], storage, DIM, out)
            times[(storage, portable, direction)].append((time.perf_counter_ns() - t0) / ROWS)
    _force_portable_kernels(False)
    print(f"ns per row, dim {DIM}, best (median) of {rounds} interleaved batches of {ROWS}")
    head = [f"encode {best}", "encode C", f"decode {best}", "decode C"]
    print(f"{'storage':9s} {head[0]:>20s} {head[1]:>18s} {head[2]:>20s} {head[3]:>18s}")
    for storage in STORAGES:
        cells = []
        for direction in ("encode", "decode"):
            for portable in (False, True):
                t = times[(storage, portable, direction)]
                cells.append(f"{min(t):8.0f} ({statistics.median(t):6.0f})")
        print(f"{storage:9s} {cells[0]:>20s} {cells[1]:>18s} {cells[2]:>20s} {cells[3]:>18s}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--callgrind"]:
        callgrind()
    else:
        wall()
