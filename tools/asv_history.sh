#!/usr/bin/env bash
# The benchmark dashboard with a history: record the last N commits with asv, then publish.
#
#   bash tools/asv_history.sh [N]     # N commits of HEAD's first-parent line (default 5)
#
#   HISTORY_BENCH    the asv -b regex of what to record (default: the bench_peers suite,
#                    embcache beside its peers, one operation at a time)
#   HISTORY_MACHINE  the asv machine name (default: asv's, this host's name)
#   ASV              the asv executable (default: asv)
#
# Every commit is built into asv's virtualenv (asv.conf.json: one environment per Python,
# a wheel per commit) and benchmarked there, so all the commits
# land in one series per graph. (Results of `asv run --python=same` form a series of their
# own, named after that interpreter's path: this script never uses it.) Benchmarks already
# recorded for a commit in that environment on this machine are skipped, so a later run
# adds only the new commits (asv's --skip-existing-commits would also skip a commit that
# has only --python=same results). Then
# tools/publish_offline.py runs `asv publish` and makes the pages self-contained; it says
# how to serve them on 127.0.0.1. The graphs show the commits of asv.conf.json's branches
# (main).
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-5}
case "$n" in
    '' | *[!0-9]* | 0*) echo "asv_history.sh: N must be a whole number >= 1, got '$n'" >&2; exit 2 ;;
esac
bench=${HISTORY_BENCH:-'^bench_peers\.'}
asv=${ASV:-asv}
machine=()
[ -z "${HISTORY_MACHINE:-}" ] || machine=(--machine "$HISTORY_MACHINE")

hashes=$(mktemp)
trap 'rm -f "$hashes"' EXIT
git rev-list --first-parent -n "$n" HEAD >"$hashes"
echo "asv_history: the last $(wc -l <"$hashes") commits of $(git rev-parse --abbrev-ref HEAD), benchmarks matching $bench"

"$asv" machine --yes "${machine[@]}" >/dev/null
"$asv" run --skip-existing-successful "${machine[@]}" --bench "$bench" --show-stderr "HASHFILE:$hashes"
python tools/publish_offline.py --asv "$asv"
