#!/usr/bin/env bash
# kill -9 at random points of rbuild builds that pull, run, commit, compress and push,
# ITERATIONS times (default 300), then rebuilds: no wrong image, no mount or process left.
# The bounded version (30 iterations) is part of `cargo test -p rbuild --test tests`
# (scripts/test); this runs the same test longer and prints its figures.
#
#   scripts/crash-loop.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/testenv/up.sh >/dev/null
start=$(date +%s)
log=$(mktemp)
status=0
RBUILD_CRASH_ITERATIONS="${1:-300}" cargo test -p rbuild --test tests \
    hardening::crash::kill_9_at_random_points_then_the_cache_builds -- --exact --nocapture \
    >"$log" 2>&1 || status=$?
grep -E '^(seed|[0-9]+ of|test |thread|  left|.*panicked)' "$log" || true
[ "$status" -eq 0 ] || tail -40 "$log"
rm -f "$log"
echo "crash-loop: ${1:-300} iterations in $(($(date +%s) - start))s, status $status"
exit "$status"
