"""The regression gate's harness: time the gated asv benchmarks of two builds of
embcache side by side, rounds interleaved, and decide whether one got slower.

    python tools/gate_bench.py --base DIR --head DIR [--bench REGEX] [--json FILE]

DIR is a source tree with the extension built in place (tools/regression_gate.sh
makes them). The benchmarks are the asv suites of ``--bench-root`` (default: this
repository's ``benchmarks/``), the same code for both builds, as asv does.

How it measures (why: on a shared 2-core machine asv's "all of one commit, then
all of the other" sees the load change between the two halves):

* Each side runs in its own long-lived worker process, importing embcache from
  its build; only one worker runs at a time (the other waits on its pipe).
* A round times one benchmark on both sides back to back, the order alternating
  (A,B then B,A). A side's figure for a round is the fastest of ``--samples``
  timed calls (``setup`` before each, untimed, as asv does; gc off while timed),
  so a preempted call is discarded. The round's ratio is head / base.
* Both workers of a pair are pinned to one CPU (where the OS allows it), a
  different one for each pair in turn. Unpinned, each worker tended to stay on
  its own core, and one core busier than the other (interrupts, other jobs) made
  one side of a same-commit comparison 0.6x or 1.6x the other for a whole pair's
  rounds (measured here: per-pair medians 0.54-1.72 unpinned, 0.91-1.02 with
  both on one CPU). Pinned, the busier core slows both sides alike.
* ``--pairs`` fresh pairs of workers share the rounds, so a lucky or unlucky
  process (heap and ASLR layout, the CPU it got) is one voice among several.
* The estimate is the median of the round ratios. A benchmark whose estimate
  exceeds ``--threshold`` is a suspect and is measured again from scratch
  (new workers, twice the rounds); it fails only if the second estimate exceeds
  the threshold too.

The default threshold, 1.15, is the geometric middle between no change (1.0)
and the 1.3x slowdown the gate must catch: both are then 14% away from it.

``--plant REGEX=F`` (for the gate's self-test, tools/gate_selftest.sh) makes the
head side of matching benchmarks F times slower in the measurement itself: each
of the side's samples is multiplied by F, so the sample is what a get path F
times as slow would give, with its noise scaled alike, and goes through the same
decision. (Timing one more call and adding (F - 1) of it, as the gate did
before, measured less than F once the first call had left its rows in the
CPU's caches: a planted 1.3x get hit read as 1.12x and was not caught.)

Exit status: 0 no benchmark slower; 1 a benchmark slower, or failing on head
only; 2 usage or setup error.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_BENCH = (
    r"^bench_peers\.(?!GetMiss\.)\w+\.time_\w+\('embcache(-default)?'\)$"
    r"|^bench_basic\.(Default)?CacheGet\.|^bench_basic\.(Default)?CachePut\.time_put\(768\)$"
    r"|^bench_core\.(EvictionChurn|AwaitOverhead|KeyCreation)\."
)
"""Gated: embcache's single-operation benchmarks, on the default cache (``dim``
not given) and on a fixed-dim one: get hit and miss, put into a cache with room
(reused memory, and a brand-new cache) and into a full one, eviction churn by
entries and by memory, what ``await`` adds, key creation. Left out: thread and
asyncio concurrency (scheduler noise), the 1M-entry scaling (setup time), the
batch suite (seconds per sample), peers (not our code), and bench_peers' get miss
(its 10k-entry table's probe lengths follow each worker's hash key, so two
processes of one build differ by more than the threshold; bench_basic's
CacheGet / DefaultCacheGet 'miss' stay gated)."""

MODULES = ("bench_basic", "bench_core", "bench_peers")


# --- worker side -----------------------------------------------------------------


def _benchmarks(modules: tuple[str, ...]) -> dict[str, tuple[Any, str, tuple[Any, ...]]]:
    """asv-style names -> (class, method name, params) for every time_ benchmark."""
    found: dict[str, tuple[Any, str, tuple[Any, ...]]] = {}
    for modname in modules:
        module = importlib.import_module(f"benchmarks.{modname}")
        for cname, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or cname.startswith("_"):
                continue
            params = getattr(cls, "params", None)
            if params and not isinstance(params[0], (list, tuple)):
                params = [params]
            combos = list(itertools.product(*params)) if params else [()]
            for mname in sorted(n for n in dir(cls) if n.startswith("time_")):
                for combo in combos:
                    name = f"{modname}.{cname}.{mname}({', '.join(map(repr, combo))})"
                    found[name.replace("()", "") if not combo else name] = (cls, mname, combo)
    return found


def _worker(src: str, bench_root: str, cpu: int | None) -> None:
    """Serve timing requests (JSON lines on stdin) for the build in `src`, on
    CPU `cpu` alone when given."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:  # the CPU left the allowed set since the driver looked: unpinned
            pass
    sys.path.insert(0, src)
    import embcache
    import embcache._core

    where = Path(embcache.__file__).resolve()
    for module in (embcache, embcache._core):  # an editable install could map either
        found = Path(module.__file__ or "?").resolve()
        if not found.is_relative_to(Path(src).resolve()):
            raise SystemExit(f"gate worker: {module.__name__} imported from {found}, not {src}")
    sys.path.append(bench_root)
    table = _benchmarks(MODULES)
    instances: dict[str, Any] = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # benchmark prints must not corrupt the protocol
    out.write(json.dumps({"ready": str(where)}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "list":
            reply: dict[str, Any] = {"names": list(table)}
        else:
            try:
                reply = {"times": _run(table, instances, req)}
            except NotImplementedError as exc:
                reply = {"skip": str(exc) or "NotImplementedError"}
            except Exception as exc:  # reported, the driver decides
                reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def _run(table: dict[str, Any], instances: dict[str, Any], req: dict[str, Any]) -> list[float]:
    """Time benchmark req["name"] req["samples"] times; a planted factor
    multiplies each sample (see ``--plant`` in the module's docstring)."""
    cls, mname, combo = table[req["name"]]
    obj = instances.get(req["name"])
    if obj is None:
        obj = instances[req["name"]] = cls()
    setup = getattr(obj, "setup", None)
    fn = getattr(obj, mname)
    plant = float(req.get("plant", 1.0))
    times = []
    for _ in range(req["samples"]):
        if setup is not None:
            setup(*combo)
        gc.disable()
        t0 = time.perf_counter()
        fn(*combo)
        dt = time.perf_counter() - t0
        gc.enable()
        times.append(plant * dt)
    return times


# --- driver side -----------------------------------------------------------------


class Worker:
    """One worker process serving one build."""

    def __init__(self, python: str, src: str, bench_root: str, cpu: int | None = None) -> None:
        pin = [] if cpu is None else ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(
            [python, __file__, "--worker", src, "--bench-root", bench_root, *pin],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        try:
            ready = self._read()
            if "ready" not in ready:
                raise RuntimeError(f"worker for {src} did not start: {ready}")
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited (status {self.proc.wait()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """End the worker (it exits at the end of its input) and its pipes."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def measure(
    args: argparse.Namespace, names: list[str], rounds: int
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Round ratios (head / base) per benchmark, over args.pairs worker pairs
    sharing `rounds` rounds; and the benchmarks that could not be compared, with
    why."""
    ratios: dict[str, list[float]] = {n: [] for n in names}
    problems: dict[str, str] = {}
    per_pair = max(1, -(-rounds // args.pairs))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    for pair in range(args.pairs):
        cpu = cpus[pair % len(cpus)]
        base = Worker(args.python, args.base, args.bench_root, cpu)
        head = Worker(args.python, args.head, args.bench_root, cpu)
        try:
            for name in names:
                if name in problems:
                    continue
                plant = args.plant_factor if args.plant_re and args.plant_re.search(name) else 1.0
                sides = {"base": base, "head": head}
                warm = {s: w.ask(op="time", name=name, samples=2) for s, w in sides.items()}
                if "times" not in warm["base"] or "times" not in warm["head"]:
                    why = {s: r.get("skip") or r.get("error") for s, r in warm.items()}
                    if "error" in warm["head"] and "times" in warm["base"]:
                        problems[name] = f"FAILS on head only: {why['head']}"
                    else:
                        problems[name] = f"not comparable: base {why['base']}; head {why['head']}"
                    continue
                for r in range(per_pair):
                    order = ("base", "head") if (r + pair) % 2 == 0 else ("head", "base")
                    best = {}
                    for side in order:
                        reply = sides[side].ask(
                            op="time",
                            name=name,
                            samples=args.samples,
                            plant=plant if side == "head" else 1.0,
                        )
                        if "times" not in reply:
                            raise RuntimeError(f"{name} on {side}: {reply}")
                        best[side] = min(reply["times"])
                    ratios[name].append(best["head"] / best["base"])
        finally:
            base.close()
            head.close()
    return ratios, problems


def _ci(ratios: list[float]) -> tuple[float, float]:
    """A ~95% distribution-free interval for the median (order statistics)."""
    s = sorted(ratios)
    n = len(s)
    k = max(0, int((n - 1.96 * n**0.5) / 2) - 1)
    return s[k], s[min(n - 1, n - 1 - k)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", metavar="SRC", help=argparse.SUPPRESS)
    p.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    p.add_argument("--base", help="source tree of the base build")
    p.add_argument("--head", help="source tree of the head build")
    p.add_argument(
        "--bench-root",
        default=str(Path(__file__).resolve().parent.parent),
        help="directory holding the benchmarks/ package (default: this repository)",
    )
    p.add_argument("--bench", default=DEFAULT_BENCH, help="regex of gated benchmark names")
    p.add_argument("--python", default=sys.executable, help="interpreter for the workers")
    p.add_argument("--threshold", type=float, default=1.15, help="fail above this ratio")
    p.add_argument("--rounds", type=int, default=24, help="rounds per benchmark (default 24)")
    p.add_argument("--pairs", type=int, default=6, help="worker pairs sharing them (6)")
    p.add_argument("--samples", type=int, default=5, help="timed calls per side per round (5)")
    p.add_argument("--plant", help="REGEX=FACTOR: self-test, head of matching benchmarks slower")
    p.add_argument("--json", help="write the per-benchmark results here")
    p.add_argument("--list", action="store_true", help="list the gated benchmarks and exit")
    args = p.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.bench_root, args.cpu)
        return 0
    args.plant_re, args.plant_factor = None, 1.0
    if args.plant:
        regex, _, factor = args.plant.rpartition("=")
        args.plant_re, args.plant_factor = re.compile(regex), float(factor)
    if not args.base or not args.head:
        p.error("--base and --head are required")
    for d in (args.base, args.head):
        if not os.path.isdir(os.path.join(d, "embcache")):
            p.error(f"{d}: no embcache/ package there")
    pattern = re.compile(args.bench)
    try:
        probe = Worker(args.python, args.head, args.bench_root)
        try:
            names = [n for n in probe.ask(op="list")["names"] if pattern.search(n)]
        finally:
            probe.close()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"gate: cannot list the benchmarks of {args.head}: {exc}", file=sys.stderr)
        return 2
    if not names:
        print(f"gate: no benchmark matches /{args.bench}/", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(names))
        return 0

    started = time.monotonic()
    try:
        return _decide(args, names, started)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # a worker that died or a benchmark that broke mid-run: not a verdict
        print(f"gate: measurement error: {exc}", file=sys.stderr)
        return 2


def _decide(args: argparse.Namespace, names: list[str], started: float) -> int:
    """Measure, re-measure the suspects, print the table; the exit status."""
    ratios, problems = measure(args, names, args.rounds)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in problems:
            results[name] = {
                "verdict": "fail" if "head only" in problems[name] else "skipped",
                "why": problems[name],
            }
            continue
        est = statistics.median(ratios[name])
        results[name] = {"ratio": est, "ci95": _ci(ratios[name]), "rounds": len(ratios[name])}
    suspects = [n for n, r in results.items() if r.get("ratio", 0.0) > args.threshold]
    if suspects:
        print(f"gate: {len(suspects)} suspect(s) above {args.threshold}x; measuring them again")
        again, problems2 = measure(args, suspects, 2 * args.rounds)
        for name in suspects:
            if name in problems2:
                results[name].update(verdict="fail", why=problems2[name])
                continue
            est2 = statistics.median(again[name])
            results[name]["again"] = {"ratio": est2, "ci95": _ci(again[name])}
    failed = False
    width = max(len(n) for n in names)
    print(f"{'benchmark':<{width}}  {'head/base':>14}  95% interval   verdict")
    for name in names:
        r = results[name]
        if "ratio" not in r:
            print(f"{name:<{width}}  {'':>14}  {'':>12}   {r['verdict']}: {r['why']}")
            failed |= r["verdict"] == "fail"
            continue
        verdict = "ok"
        if "again" in r:
            verdict = "SLOWER" if r["again"]["ratio"] > args.threshold else "ok (not confirmed)"
        elif r["ratio"] < 1 / args.threshold:
            verdict = "faster"
        r.setdefault("verdict", "fail" if verdict == "SLOWER" else "ok")
        failed |= r["verdict"] == "fail"
        lo, hi = r["ci95"]
        shown = f"{r['ratio']:.3f}" + (f" -> {r['again']['ratio']:.3f}" if "again" in r else "")
        print(f"{name:<{width}}  {shown:>14}  {lo:.2f}-{hi:.2f}    {verdict}")
    elapsed = time.monotonic() - started
    print(
        f"gate: {len(names)} benchmarks, {args.rounds} interleaved rounds each over {args.pairs} "
        f"worker pairs, best of {args.samples} per side per round; threshold {args.threshold}x; "
        f"{elapsed:.0f} s"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "threshold": args.threshold,
                    "failed": failed,
                    "results": results,
                    "seconds": elapsed,
                    "plant": args.plant,
                },
                indent=1,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
