#!/usr/bin/env bash
# Performance regression gate: build BASE and HEAD, time the gated asv benchmarks
# of both side by side with rounds interleaved (tools/gate_bench.py), and fail
# (exit 1) when a benchmark got slower by more than the threshold twice in a row.
#
#   tools/regression_gate.sh [BASE]
#
# BASE defaults to the merge-base of $GATE_BRANCH (main) and HEAD; on main itself
# (merge-base == HEAD) it is HEAD~1. Each commit is exported (git archive) and
# built in place once, under .asv/gate/<sha>-<python>, and reused by later runs.
# The benchmark code is the working tree's benchmarks/, the same for both sides.
#
# Why not `asv continuous`: it times all of one commit, then all of the other, so
# on a shared 2-core machine a change of load between the two halves reads as a
# regression (identical builds: AwaitOverhead('async') 1.87x, CacheGet('miss')
# 1.59x). Here every round times one benchmark on both builds back to back; see
# tools/gate_bench.py for the method and tools/gate_selftest.sh for its test.
#
# Environment:
#   GATE_THRESHOLD  ratio head/base above which a benchmark is slower (default
#                   1.15: halfway, geometrically, between no change and the 1.3x
#                   slowdown the gate must catch)
#   GATE_BENCH      regex of the gated benchmark names (default: gate_bench.py's
#                   DEFAULT_BENCH; `python tools/gate_bench.py --list ...` lists them)
#   GATE_ROUNDS     interleaved rounds per benchmark (default 24)
#   GATE_PYTHON     interpreter to build and run with (default: python3 on PATH;
#                   needs Cython, numpy and setuptools)
#   GATE_BRANCH     branch whose merge-base is the default BASE (default main)
#   GATE_PLANT      REGEX=FACTOR, for the self-test only: the head side of the
#                   matching benchmarks is measured FACTOR times slower
#   GATE_JSON       file to write the per-benchmark results to
#
# Exit status: 0 no benchmark slower; 1 a benchmark slower (or failing on HEAD
# only); 2 usage or setup error (a build that fails included).
set -euo pipefail

BRANCH="${GATE_BRANCH:-main}"
PY="${GATE_PYTHON:-python3}"

if [ "$#" -gt 1 ]; then
    echo "usage: $0 [BASE]" >&2
    exit 2
fi
cd "$(git rev-parse --show-toplevel)" || exit 2
root=$PWD

if [ "$#" -eq 1 ]; then
    BASE="$1"
else
    BASE="$(git merge-base "$BRANCH" HEAD)" || { echo "gate: no merge-base with $BRANCH" >&2; exit 2; }
    if [ "$(git rev-parse "$BASE")" = "$(git rev-parse HEAD)" ]; then
        BASE="HEAD~1"
    fi
fi
BASE_SHA="$(git rev-parse --verify "$BASE^{commit}")" || { echo "gate: bad BASE $BASE" >&2; exit 2; }
HEAD_SHA="$(git rev-parse HEAD)"
pyver="$("$PY" -c 'import sys; print("py%d%d" % sys.version_info[:2])')" || exit 2

# build <sha>: print the directory holding that commit built in place
build() {
    local dir="$root/.asv/gate/$1-$pyver"
    if [ ! -f "$dir/.built" ]; then
        echo "gate: building ${1:0:8} in $dir" >&2
        rm -rf "$dir" && mkdir -p "$dir"
        git archive "$1" | tar -x -C "$dir"
        if ! (cd "$dir" && "$PY" setup.py build_ext --inplace -q >build.log 2>&1); then
            tail -n 30 "$dir/build.log" >&2
            echo "gate: build of ${1:0:8} failed" >&2
            return 2
        fi
        touch "$dir/.built"
    fi
    echo "$dir"
}
base_dir="$(build "$BASE_SHA")" || exit 2
head_dir="$(build "$HEAD_SHA")" || exit 2

args=(--base "$base_dir" --head "$head_dir" --python "$PY")
[ -n "${GATE_THRESHOLD:-}" ] && args+=(--threshold "$GATE_THRESHOLD")
[ -n "${GATE_BENCH:-}" ] && args+=(--bench "$GATE_BENCH")
[ -n "${GATE_ROUNDS:-}" ] && args+=(--rounds "$GATE_ROUNDS")
[ -n "${GATE_PLANT:-}" ] && args+=(--plant "$GATE_PLANT")
[ -n "${GATE_JSON:-}" ] && args+=(--json "$GATE_JSON")

echo "gate: base ${BASE_SHA:0:8} -> head ${HEAD_SHA:0:8}${GATE_PLANT:+ (planted: $GATE_PLANT)}"
set +e
"$PY" tools/gate_bench.py "${args[@]}"
status=$?
set -e
case "$status" in
    0) echo "gate: passed" ;;
    1) echo "gate: FAILED: a gated benchmark is slower on head (measured twice), or fails on head only" >&2 ;;
    *) echo "gate: error (exit $status)" >&2; exit 2 ;;
esac
exit "$status"
