#!/usr/bin/env bash
# Self-test of the performance regression gate (tools/regression_gate.sh), through
# the gate itself, on the commit checked out:
#
#   (a) HEAD against itself must pass: no gated benchmark may be reported slower;
#   (b) HEAD against itself with the head side of bench_basic.CacheGet get hit
#       planted 1.3x slower (GATE_PLANT, see tools/gate_bench.py) must fail, on
#       that benchmark and on no other.
#
#   tools/gate_selftest.sh [RUNS]      (default 1 run of each; the gate's goal is
#                                       RUNS=10: 10 of 10 passes, 10 of 10 caught)
#
# Every gated benchmark is measured in both (the same work a real gate run does,
# one build). Environment: GATE_PYTHON, GATE_ROUNDS as for the gate.
# Exit status: 0 when every run behaved; 1 otherwise; 2 usage or setup error.
set -euo pipefail

runs="${1:-1}"
case "$runs" in '' | *[!0-9]*) echo "usage: $0 [RUNS]" >&2; exit 2 ;; esac
cd "$(git rev-parse --show-toplevel)" || exit 2
planted='^bench_basic\.CacheGet\.time_get\('"'"'hit'"'"'\)$'
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

passed=0
caught=0
for i in $(seq 1 "$runs"); do
    t0=$SECONDS
    set +e
    GATE_JSON="$out/same.json" bash tools/regression_gate.sh HEAD >"$out/same.log" 2>&1
    status=$?
    set -e
    [ "$status" -eq 2 ] && { cat "$out/same.log" >&2; exit 2; }
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
        echo "self-test run $i (a) same commit: passed ($((SECONDS - t0)) s)"
    else
        echo "self-test run $i (a) same commit: FALSE ALARM ($((SECONDS - t0)) s)"
        cat "$out/same.log"
    fi

    t0=$SECONDS
    set +e
    GATE_JSON="$out/plant.json" GATE_PLANT="$planted=1.3" bash tools/regression_gate.sh HEAD \
        >"$out/plant.log" 2>&1
    status=$?
    set -e
    [ "$status" -eq 2 ] && { cat "$out/plant.log" >&2; exit 2; }
    # caught = the gate failed, on the planted benchmark and on it alone
    verdicts=$("${GATE_PYTHON:-python3}" -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print(" ".join(sorted(n for n, v in r.items() if v.get("verdict") == "fail")))
' "$out/plant.json")
    if [ "$status" -eq 1 ] && [ "$verdicts" = "bench_basic.CacheGet.time_get('hit')" ]; then
        caught=$((caught + 1))
        echo "self-test run $i (b) planted 1.3x get hit: caught ($((SECONDS - t0)) s)"
    else
        echo "self-test run $i (b) planted 1.3x get hit: NOT caught as expected" \
             "(exit $status, failed: ${verdicts:-none}) ($((SECONDS - t0)) s)"
        cat "$out/plant.log"
    fi
done
echo "gate self-test: same commit passed $passed/$runs; planted 1.3x slowdown caught $caught/$runs"
[ "$passed" -eq "$runs" ] && [ "$caught" -eq "$runs" ]
