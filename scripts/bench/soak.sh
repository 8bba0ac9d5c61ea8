#!/usr/bin/env bash
# Soak benchmark (issue 21): 200 builds in one process through builder-core's API
# (crates/builder-core/examples/soak.rs), printing that process's RSS, peak RSS and open fds
# every 20 builds, then the RSS growth from the first line to the last. Each build runs a
# step, packs a layer and writes an OCI layout, on one cache.
#
# usage: scripts/bench/soak.sh [--builds N] [--every N] [--soak PATH]
#   --soak PATH   a built soak binary (default: cargo build --release --example soak)
# Needs the local registry of scripts/testenv/up.sh (its busybox image).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
builds=200
every=20
soak=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --builds) builds=$2; shift 2 ;;
    --every) every=$2; shift 2 ;;
    --soak) soak=$2; shift 2 ;;
    *) sed -n '/^# usage:/,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
curl -fsS http://127.0.0.1:5000/v2/ >/dev/null || { echo "no registry on 127.0.0.1:5000: run scripts/testenv/up.sh" >&2; exit 1; }
if [[ -z $soak ]]; then
  (cd "$repo" && cargo build --release -p builder-core --example soak) >&2
  soak=${CARGO_TARGET_DIR:-$repo/target}/release/examples/soak
fi
mkdir -p /var/tmp/rbuild-bench
echo "soak: $builds builds, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$soak" --builds "$builds" --every "$every" --dir /var/tmp/rbuild-bench
