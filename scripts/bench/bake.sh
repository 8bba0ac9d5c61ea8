#!/usr/bin/env bash
# Bake benchmark (issue 18): both example services built
#   bake        by one `rbuild bake -f examples/docker-compose.core-services.yml` (one
#               process, one cache, steps the two share run once),
#   sequential  by two `rbuild build`s one after the other (one cache),
#   buildkit    by the reference BuildKit v0.32.2: two `buildctl build` solves started
#               together (one daemon, one cache),
# cold (rbuild: fresh --cache-dir; BuildKit: `buildctl prune --all`, so base images are
# pulled during the build) and warm (the same again, nothing changed). No tool exports
# an image (no --push/--output), as in builds.sh's cold and warm rows.
#
# Prints seconds per tool and the ratios bake/buildkit and bake/sequential, with the
# 1-minute load average when each row started (the machine may be shared: figures taken
# while others work are "under load").
#
# usage: scripts/bench/bake.sh [--rbuild PATH] [--out DIR]
#   --rbuild PATH  the rbuild binary (default: target/release/rbuild, built if missing)
# Needs the test environment (scripts/testenv/up.sh). Empties the reference BuildKit's cache.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
buildctl_bin=${BUILDCTL:-/var/tmp/reference-buildkit/bin/buildctl}
buildkit_addr=${BUILDKIT_ADDR:-unix:///run/reference-buildkitd.sock}
buildctl() { "$buildctl_bin" --addr "$buildkit_addr" "$@"; }
rbuild=""
out=""
usage() {
  sed -n '/^# usage:/,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while [[ $# -gt 0 ]]; do
  case $1 in
    --rbuild) rbuild=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
done
if [[ -z $rbuild ]]; then
  rbuild=$repo/target/release/rbuild
  if ! "$rbuild" bake --help >/dev/null 2>&1; then
    echo "[bench] building rbuild (cargo build --release -p rbuild)" >&2
    (cd "$repo" && cargo build --release -p rbuild) >&2
  fi
fi
out=${out:-$(mktemp -d /tmp/rbuild-bench-bake.XXXXXX)}
mkdir -p "$out"
work=$(mktemp -d /var/tmp/rbuild-bench-bake-work.XXXXXX)
trap 'rm -rf "$work"' EXIT
services=(auth-service user-service)
compose=$repo/examples/docker-compose.core-services.yml

now() { date +%s.%N; }
since() { awk -v s="$1" -v n="$(now)" 'BEGIN { printf "%.2f", n - s }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }
log() { echo "[bench] $*" >&2; }

rb_bake() { # cache log
  (cd "$repo" && "$rbuild" bake -f "$compose" --progress=plain --cache-dir "$1") >"$out/$2.log" 2>&1
}
rb_sequential() { # cache log
  local s
  for s in "${services[@]}"; do
    "$rbuild" build --progress=plain --cache-dir "$1" "$repo/examples/$s" >>"$out/$2.log" 2>&1 || return 1
  done
}
bk_both() { # log
  local s pids=() rc=0
  for s in "${services[@]}"; do
    buildctl build --progress plain --frontend dockerfile.v0 \
      --local "context=$repo/examples/$s" --local "dockerfile=$repo/examples/$s" \
      >"$out/$1-$s.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

declare -A secs load
timed() { # key command...
  local key=$1 t0
  shift
  sync
  load[$key]=$(load1)
  t0=$(now)
  if "$@"; then secs[$key]=$(since "$t0"); else secs[$key]=n/a; log "$key failed: see $out"; fi
  log "$key: ${secs[$key]} s"
}

log "cold"
timed cold-bake rb_bake "$work/cache-bake" cold-bake
timed cold-sequential rb_sequential "$work/cache-seq" cold-sequential
buildctl prune --all >/dev/null 2>&1 || log "warning: buildctl prune --all failed"
timed cold-buildkit bk_both cold-buildkit
log "warm"
timed warm-bake rb_bake "$work/cache-bake" warm-bake
timed warm-sequential rb_sequential "$work/cache-seq" warm-sequential
timed warm-buildkit bk_both warm-buildkit

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
{
  printf '%-6s %10s %12s %10s %16s %18s  %s\n' row "bake(s)" "2x build(s)" "buildkit(s)" bake/buildkit bake/sequential "load (bake, seq, bk)"
  for row in cold warm; do
    b=${secs[$row-bake]} s=${secs[$row-sequential]} k=${secs[$row-buildkit]}
    printf '%-6s %10s %12s %10s %16s %18s  %s\n' "$row" "$b" "$s" "$k" "$(ratio "$b" "$k")" "$(ratio "$b" "$s")" \
      "${load[$row-bake]}, ${load[$row-sequential]}, ${load[$row-buildkit]}"
  done
} | tee "$out/results.txt"
log "logs in $out"
