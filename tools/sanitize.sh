#!/usr/bin/env bash
# Build the extension with AddressSanitizer + UndefinedBehaviorSanitizer and run
# the test suite against that build: `bash tools/sanitize.sh [extra pytest args]`.
#
# How, and why this way:
# - The working tree's files are copied to a temporary folder and the extension is
#   built in place there (EMBCACHE_SANITIZE=1, see setup.py), in a throwaway
#   virtualenv with just the build and test requirements: the normal in-place
#   build in the source tree (embcache/_core.c, the .so, build/) is not touched.
# - pytest runs from the copy's root with `python -m pytest`, so `import embcache`
#   finds the copy with the sanitized .so next to it (conftest's run_python
#   helpers pass the same folder on to their subprocesses).
# - CPython is not built with ASan, so the ASan runtime is LD_PRELOADed into the
#   interpreter running pytest (only there: pip and the build run without it).
# - Any report is fatal: UBSan via -fno-sanitize-recover=undefined at build time
#   (and halt_on_error here), ASan by default (abort_on_error). detect_leaks=0
#   because CPython itself "leaks" at exit; leaks of the core are covered by
#   tests/core/test_leak.py in the normal run. allocator_may_return_null=1: a request
#   the allocator cannot meet returns NULL as glibc's malloc does (numpy then
#   raises MemoryError, which tests of hostile sizes expect), instead of ASan's
#   default abort.
# - Skipped here (figures ASan distorts, or tools that are not about the core):
#   the `slow` marker (the RSS/tracemalloc growth tests of tests/core/test_leak.py:
#   ASan's shadow memory and quarantine change RSS; stress and scalability runs
#   that take minutes under ASan), tests/project/test_sourcecode.py (ruff, mypy,
#   stubtest: nothing of the core runs), tests/cli/test_cli.py (subprocess-heavy,
#   timings), and four tests that assert speed, RSS or page faults:
#   test_acceptance.py::test_performance_regression (ops/sec),
#   test_hardening.py::test_huge_bounds_with_a_fixed_dim_cost_nothing_up_front,
#   test_slab_pages.py::test_filling_a_default_cache_faults_far_less_than_once_per_page and
#   test_table_shrink.py::test_a_shrunk_table_gives_its_pages_back (ASan's allocator
#   and shadow memory fault and keep pages of their own; the other shrink tests, the
#   moves and the invariants after them, run here).
# - The shared segment's tests (tests/shared) run here too, against the sanitized
#   embcache.shared._segment: real processes (fork, spawn, subprocess) inherit
#   LD_PRELOAD and the ASan/UBSan options, so every worker of the chaos test, the
#   crash, flight and refusal tests and the header fuzzer runs instrumented.
#   EMBCACHE_SANITIZED=1 tells the tests they run here: the chaos test kills 150
#   times instead of the ci profile's 1,000 (a kill cycle costs about 7x under ASan;
#   the release suites run the 1,000). Nothing of tests/shared is left out: its one memory
#   figure, test_shared_pss.py, is the proportional set size of the segment's own file
#   mapping (/proc/<pid>/smaps, by inode), which ASan neither shadows nor allocates
#   from, so it holds under ASan as without it.
# - PYTHONMALLOC=malloc routes CPython's own allocations (key strings, bytes)
#   through malloc too, so ASan also sees the core over-reading a Python buffer.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
started=$SECONDS
python=${PYTHON:-python3}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=$tmp/src
mkdir -p "$src"
# tracked and untracked (not ignored) files of the working tree, not build output
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$repo" && xargs -0 sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh) |
    (cd "$repo" && tar --null -T - -cf -) | tar -xf - -C "$src"
rm -f "$src"/embcache/_core.c "$src"/embcache/_core.*.so \
    "$src"/embcache/shared/_segment.c "$src"/embcache/shared/_segment.*.so

"$python" -m venv "$tmp/venv"
# shellcheck disable=SC1091
. "$tmp/venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "setuptools>=77" "Cython>=3.1,<3.4" "numpy>=2.0" \
    "pytest>=7" "hypothesis>=6.80" "pytest-asyncio>=0.24"

echo "   (venv ready after $((SECONDS - started)) s)"
echo "== sanitizer build (EMBCACHE_SANITIZE=1: -fsanitize=address,undefined)"
(cd "$src" && EMBCACHE_SANITIZE=1 python setup.py --quiet build_ext --inplace >"$tmp/build.log" 2>&1) \
    || { cat "$tmp/build.log"; exit 1; }

libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
[ -f "$libasan" ] && [ -f "$libubsan" ] || { echo "libasan/libubsan not found" >&2; exit 1; }
# both extensions really are instrumented (a silently plain build would pass everything)
for so in "$src"/embcache/_core.*.so "$src"/embcache/shared/_segment.*.so; do
    [ -f "$so" ] || { echo "$so was not built" >&2; exit 1; }
    linked=$(ldd "$so")
    grep -q libasan <<<"$linked" && grep -q libubsan <<<"$linked" \
        || { echo "$so is not linked against libasan and libubsan" >&2; exit 1; }
done

echo "   (built after $((SECONDS - started)) s)"
echo "== pytest under ASan + UBSan"
cd "$src"
LD_PRELOAD="$libasan:$libubsan" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_init_order=1:detect_stack_use_after_return=1:allocator_may_return_null=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
PYTHONMALLOC=malloc EMBCACHE_SANITIZED=1 \
    python -m pytest -q -p no:cacheprovider -m "not slow" \
        --ignore=tests/project/test_sourcecode.py --ignore=tests/cli/test_cli.py \
        --deselect=tests/facade/test_acceptance.py::test_performance_regression \
        --deselect=tests/core/test_hardening.py::test_huge_bounds_with_a_fixed_dim_cost_nothing_up_front \
        --deselect=tests/core/test_slab_pages.py::test_filling_a_default_cache_faults_far_less_than_once_per_page \
        --deselect=tests/core/test_table_shrink.py::test_a_shrunk_table_gives_its_pages_back \
        "$@"

echo "== sanitizer run passed in $((SECONDS - started)) s"
