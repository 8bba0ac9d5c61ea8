#!/usr/bin/env bash
# Scale-out benchmark (issue 17): two "runners" in parallel, one per platform, each pushing
# by digest with a cache of its own, then the merge into one index (wall time of the slower
# runner plus the merge), against one multi-platform build in one command. For rbuild and
# for the reference BuildKit (buildkitd v0.32.2, buildctl), on this machine, in one run.
#
# Rows (each cold: rbuild with fresh --cache-dirs, BuildKit after `buildctl prune --all`):
#   one-command   --platform linux/amd64,linux/arm64, pushed with a tag
#   two-runners   linux/amd64 and linux/arm64 as two processes at once, push-by-digest=true,
#                 then `rbuild imagetools create` of the two digests (the merge is timed
#                 apart, and included). BuildKit's two runners share one buildkitd (and so
#                 its cache): the split costs it nothing extra, rbuild's runners share nothing.
#
# On one machine both runners share its cores and arm64 still runs under QEMU: this
# measures what the split costs or saves here, not a native arm64 runner's speed.
# Prints seconds, and the ratios two-runners/one-command and rbuild/BuildKit. --warm keeps
# the caches of a first (untimed) run: the rows then time a rebuild with nothing changed.
#
# usage: scripts/bench/scaleout.sh [--service auth-service | --context DIR] [--rbuild PATH]
#                                  [--warm] [--only rbuild|buildkit]
#   --context DIR   build DIR (its Dockerfile) instead of examples/SERVICE
# Needs the test environment (scripts/testenv/up.sh). Empties the reference BuildKit's cache.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
registry=127.0.0.1:5000
buildctl_bin=${BUILDCTL:-/var/tmp/reference-buildkit/bin/buildctl}
buildkit_addr=${BUILDKIT_ADDR:-unix:///run/reference-buildkitd.sock}
buildctl() { "$buildctl_bin" --addr "$buildkit_addr" "$@"; }
service=auth-service
rbuild=""
warm=no
only=""
context_arg=""
usage() {
  sed -n '/^# usage:/,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while [[ $# -gt 0 ]]; do
  case $1 in
    --service) service=$2; shift 2 ;;
    --context) context_arg=$2; shift 2 ;;
    --rbuild) rbuild=$2; shift 2 ;;
    --warm) warm=yes; shift ;;
    --only) only=$2; [[ $only == buildkit || $only == rbuild ]] || usage; shift 2 ;;
    *) usage ;;
  esac
done
if [[ -z $rbuild ]]; then
  rbuild=$repo/target/release/rbuild
  [[ -x $rbuild ]] || (cd "$repo" && cargo build --release -q -p rbuild)
fi
context=$repo/examples/$service
if [[ -n $context_arg ]]; then
  context=$(cd "$context_arg" && pwd)
  service=$(basename "$context")
fi
[[ -f $context/Dockerfile ]] || { echo "no $context/Dockerfile" >&2; exit 2; }
work=$(mktemp -d /var/tmp/rbuild-bench-scaleout.XXXXXX)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a + b }'; }
digest_of() { sed -n 's/.*"containerimage.digest": *"\(sha256:[0-9a-f]*\)".*/\1/p' "$1"; }
name() { echo "$registry/bench/scaleout-$1-$$-$RANDOM"; }
log() { echo "[scaleout] $*" >&2; }

# rbuild ------------------------------------------------------------------------------
rb_build() { # log cache args...
  local logf=$1 cache=$2
  shift 2
  "$rbuild" build --progress=plain --cache-dir "$cache" "$@" "$context" >"$logf" 2>&1 ||
    { tail -20 "$logf" >&2; return 1; }
}
rb_one() { # cache-suffix -> seconds
  local img t0
  img=$(name rbuild-one)
  t0=$(now)
  rb_build "$work/rb-one.log" "$work/rb-cache-one$1" --platform linux/amd64,linux/arm64 -t "$img:1" --push
  secs "$t0" "$(now)"
}
rb_runners() { # cache-suffix -> "slower merge"
  local img t0 pa pb ta tb t1
  img=$(name rbuild-runners)
  t0=$(now)
  ( rb_build "$work/rb-amd64.log" "$work/rb-cache-amd64$1" --platform linux/amd64 -t "$img" \
      -o type=image,push=true,push-by-digest=true,name-canonical=true --metadata-file "$work/rb-amd64.json"
    now >"$work/rb-amd64.end" ) & pa=$!
  ( rb_build "$work/rb-arm64.log" "$work/rb-cache-arm64$1" --platform linux/arm64 -t "$img" \
      -o type=image,push=true,push-by-digest=true,name-canonical=true --metadata-file "$work/rb-arm64.json"
    now >"$work/rb-arm64.end" ) & pb=$!
  wait "$pa"; wait "$pb"
  ta=$(secs "$t0" "$(cat "$work/rb-amd64.end")")
  tb=$(secs "$t0" "$(cat "$work/rb-arm64.end")")
  t1=$(now)
  "$rbuild" imagetools create --progress=quiet -t "$img:1" \
    "$img@$(digest_of "$work/rb-amd64.json")" "$img@$(digest_of "$work/rb-arm64.json")"
  echo "$(max "$ta" "$tb") $(secs "$t1" "$(now)") $ta $tb"
}

# BuildKit ----------------------------------------------------------------------------
bk_build() { # log args...
  local logf=$1
  shift
  buildctl build --frontend dockerfile.v0 --local "context=$context" --local "dockerfile=$context" \
    "$@" >"$logf" 2>&1 || { tail -20 "$logf" >&2; return 1; }
}
bk_prune() { [[ $warm == yes ]] || buildctl prune --all >/dev/null; }
bk_one() {
  local img t0
  img=$(name buildkit-one)
  bk_prune
  t0=$(now)
  bk_build "$work/bk-one.log" --opt platform=linux/amd64,linux/arm64 \
    --output "type=image,name=$img:1,push=true,registry.insecure=true"
  secs "$t0" "$(now)"
}
bk_runners() {
  local img t0 pa pb ta tb t1
  img=$(name buildkit-runners)
  bk_prune
  t0=$(now)
  ( bk_build "$work/bk-amd64.log" --opt platform=linux/amd64 --metadata-file "$work/bk-amd64.json" \
      --output "type=image,name=$img,push=true,push-by-digest=true,name-canonical=true,registry.insecure=true"
    now >"$work/bk-amd64.end" ) & pa=$!
  ( bk_build "$work/bk-arm64.log" --opt platform=linux/arm64 --metadata-file "$work/bk-arm64.json" \
      --output "type=image,name=$img,push=true,push-by-digest=true,name-canonical=true,registry.insecure=true"
    now >"$work/bk-arm64.end" ) & pb=$!
  wait "$pa"; wait "$pb"
  ta=$(secs "$t0" "$(cat "$work/bk-amd64.end")")
  tb=$(secs "$t0" "$(cat "$work/bk-arm64.end")")
  # No buildx here: the same merge, by rbuild, for both.
  t1=$(now)
  "$rbuild" imagetools create --progress=quiet -t "$img:1" \
    "$img@$(digest_of "$work/bk-amd64.json")" "$img@$(digest_of "$work/bk-arm64.json")"
  echo "$(max "$ta" "$tb") $(secs "$t1" "$(now)") $ta $tb"
}

suffix=""
if [[ $warm == yes ]]; then
  log "warm: a first, untimed run of every row fills the caches"
  [[ $only == buildkit ]] || { rb_one "" >/dev/null; rb_runners "" >/dev/null; }
  [[ $only == rbuild ]] || { bk_one >/dev/null; bk_runners >/dev/null; }
else
  suffix=-$RANDOM
fi
load() { cut -d' ' -f1 /proc/loadavg; }
printf '%-26s %10s %10s %8s   %s\n' "row ($service)" rbuild buildkit "rb/bk" "load"
if [[ $only != buildkit ]]; then rb1=$(rb_one "$suffix"); else rb1=0; fi
if [[ $only != rbuild ]]; then bk1=$(bk_one); else bk1=0; fi
printf '%-26s %10s %10s %8s   %s\n' one-command "$rb1" "$bk1" "$(ratio "$rb1" "$bk1")" "$(load)"
if [[ $only != buildkit ]]; then read -r rbs rbm rba rbb < <(rb_runners "$suffix"); else rbs=0 rbm=0 rba=0 rbb=0; fi
if [[ $only != rbuild ]]; then read -r bks bkm bka bkb < <(bk_runners); else bks=0 bkm=0 bka=0 bkb=0; fi
rbt=$(add "$rbs" "$rbm") bkt=$(add "$bks" "$bkm")
printf '%-26s %10s %10s %8s   %s\n' "  runner amd64" "$rba" "$bka" "$(ratio "$rba" "$bka")" ""
printf '%-26s %10s %10s %8s   %s\n' "  runner arm64" "$rbb" "$bkb" "$(ratio "$rbb" "$bkb")" ""
printf '%-26s %10s %10s %8s   %s\n' "  merge (imagetools)" "$rbm" "$bkm" "" ""
printf '%-26s %10s %10s %8s   %s\n' "two-runners (slower+merge)" "$rbt" "$bkt" "$(ratio "$rbt" "$bkt")" "$(load)"
printf '%-26s %10s %10s\n' "two-runners/one-command" "$(ratio "$rbt" "$rb1")" "$(ratio "$bkt" "$bk1")"
