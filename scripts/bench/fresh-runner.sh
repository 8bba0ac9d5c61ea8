#!/usr/bin/env bash
# Fresh-runner benchmark (issue 15): a CI runner that starts empty and builds from a cache
# another runner exported to the registry. The reference BuildKit (v0.32.2 from
# ../shared/reference-buildkit) against rbuild, on this machine, in one run.
#
# The example service is built with its `RUN npm ci` given an npm cache mount
# (`RUN --mount=type=cache,target=/root/.npm npm ci`), in a temporary copy, for both tools.
# BuildKit runs in a second buildkitd this script starts with its own --root and socket and
# stops by its PID; "fresh" is that daemon started on an empty root (its start is not
# timed). rbuild's "fresh" is an empty --cache-dir.
#
# Rows:
#   export        the time of the cache export itself: after runner A's cold build (not
#                 timed), the same build again (all cached) with --cache-to
#                 type=registry,mode=max (BuildKit: --export-cache type=registry,mode=max),
#                 to an empty repository
#   no-change     fresh runner, --cache-from / --import-cache of that cache, the image
#                 pushed to the same registry (rbuild: --push --provenance=false, as buildctl
#                 attaches no attestation)
#   source        the same after one line added to src/config.ts
#   dependency    the same after one small dependency added to package.json and the
#                 lockfile, on top of the source change (npm ci runs: rbuild restores the
#                 npm cache mount from the cache, BuildKit cannot export it)
#   wide          buildx#3491 (cache import slower than the build): a generated Dockerfile
#                 of S stages x K RUN steps (--wide SxK, default 12x4; each step writes
#                 --wide-bytes of random bytes, default 524288: 48 records, about 25 MB of
#                 layers) exported mode=max, then a fresh runner with no change pushing the
#                 image; "wide-import" is the import step alone, from each tool's progress
#                 log ("importing cache manifest from ..." to its DONE)
# Targets (issue 15): rbuild/BuildKit <= 0.8 (export), 0.3, 0.7, 0.6; none for wide.
#
# usage: scripts/bench/fresh-runner.sh [--rbuild PATH] [--service NAME] [--out DIR]
#                                      [--no-wide | --wide-only] [--wide SxK] [--wide-bytes N]
# Needs the test environment (scripts/testenv/up.sh) and a built rbuild (default
# target/release/rbuild). The machine may be shared: each row prints the load average.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
registry=127.0.0.1:5000
bk_bin=${REFERENCE_BUILDKIT_DIR:-/var/tmp/reference-buildkit}/bin
rbuild=${CARGO_TARGET_DIR:-$repo/target}/release/rbuild
service=auth-service
out=""
wide=yes
service_rows=yes
wide_stages=12
wide_steps=4
wide_bytes=524288
# The dependency the "dependency" row adds: small, no dependencies, not in the tree.
extra_dep=picocolors@1.1.1
while [[ $# -gt 0 ]]; do
  case $1 in
    --rbuild) rbuild=$2; shift 2 ;;
    --service) service=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-wide) wide=no; shift ;;
    --wide-only) service_rows=no; shift ;;
    --wide) wide_stages=${2%x*}; wide_steps=${2#*x}; shift 2 ;;
    --wide-bytes) wide_bytes=$2; shift 2 ;;
    *) sed -n '/^# usage:/,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "run as root (buildkitd needs it)" >&2; exit 2; }
[[ -x $rbuild ]] || { echo "no rbuild at $rbuild (cargo build --release -p rbuild, or --rbuild PATH)" >&2; exit 2; }
[[ -x $bk_bin/buildkitd ]] || { echo "no buildkitd in $bk_bin (../shared/reference-buildkit/up.sh)" >&2; exit 2; }
[[ -d $repo/examples/$service ]] || { echo "no example $service" >&2; exit 2; }
curl -fsS "http://$registry/v2/" >/dev/null ||
  { echo "no registry at $registry (scripts/testenv/up.sh)" >&2; exit 2; }

work=$(mktemp -d /var/tmp/rbuild-bench-fresh.XXXXXX)
out=${out:-$work/logs}
mkdir -p "$out"
run_id=$(date +%s)-$$
log() { echo "[fresh-runner] $*" >&2; }
now() { date +%s.%N; }
since() { awk -v s="$1" -v n="$(now)" 'BEGIN { printf "%.2f", n - s }'; }

# ---------------------------------------------------------------- our own buildkitd
bk_root=$work/bk-root
bk_sock=$work/buildkitd.sock
bk_pid=""
bk_unmount() { # whatever a stopped daemon left mounted under its root, deepest first
  awk -v r="$bk_root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
bk_start() {
  bk_unmount
  rm -rf --one-file-system "$bk_root"
  mkdir -p "$bk_root"
  cat >"$work/buildkitd.toml" <<TOML
[worker.oci]
  enabled = true
  snapshotter = "overlayfs"
  gc = false
[worker.containerd]
  enabled = false
[registry."$registry"]
  http = true
  insecure = true
TOML
  "$bk_bin/buildkitd" --config "$work/buildkitd.toml" --root "$bk_root" \
    --addr "unix://$bk_sock" --oci-worker-net=host >>"$out/buildkitd.log" 2>&1 &
  bk_pid=$!
  for _ in $(seq 120); do
    bk debug workers >/dev/null 2>&1 && return
    kill -0 "$bk_pid" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 20 "$out/buildkitd.log" >&2
  echo "buildkitd did not start (log: $out/buildkitd.log)" >&2
  exit 1
}
bk_stop() {
  if [[ -n $bk_pid ]]; then
    kill "$bk_pid" 2>/dev/null || true
    wait "$bk_pid" 2>/dev/null || true
    bk_pid=""
  fi
  bk_unmount
}
cleanup() {
  bk_stop
  rm -rf --one-file-system "$bk_root" "$work/rb" "$work/ctx"
}
trap cleanup EXIT
bk() { "$bk_bin/buildctl" --addr "unix://$bk_sock" "$@"; }
fail() { # tool name
  tail -n 30 "$out/$1-$2.log" >&2
  echo "$1 failed in row $2 (log: $out/$1-$2.log)" >&2
  exit 1
}
bk_build() { # name ctx args...
  local name=$1 ctx=$2
  shift 2
  bk build --progress plain --frontend dockerfile.v0 --local "context=$ctx" \
    --local "dockerfile=$ctx" "$@" >"$out/buildkit-$name.log" 2>&1 || fail buildkit "$name"
}
rb_build() { # name cache_dir ctx args...
  local name=$1 cache=$2 ctx=$3
  shift 3
  "$rbuild" build --progress=plain --cache-dir "$cache" "$@" "$ctx" \
    >"$out/rbuild-$name.log" 2>&1 || fail rbuild "$name"
}
# Seconds of the cache import step in a plain progress log: the DONE of the step whose
# title is "importing cache manifest from ..." (both tools print BuildKit's format).
import_secs() { # log
  awk '/importing cache manifest from/ && !n { n = $1 }
       n && $1 == n && $2 == "DONE" { sub(/s$/, "", $3); t += $3; n = "" }
       END { printf "%.2f", t }' "$1"
}

# ---------------------------------------------------------------- the contexts
ctx_for() { # tool -> a pristine copy of the example with the npm cache mount
  local d=$work/ctx/$1
  rm -rf "$d"
  mkdir -p "$d"
  (cd "$repo/examples/$service" && tar --exclude=./node_modules --exclude=./dist -cf - .) | tar -xf - -C "$d"
  sed -i 's|^RUN npm ci$|RUN --mount=type=cache,target=/root/.npm npm ci|' "$d/Dockerfile"
  grep -q 'mount=type=cache,target=/root/.npm npm ci' "$d/Dockerfile" ||
    { echo "the example's Dockerfile has no 'RUN npm ci' line to give a cache mount" >&2; exit 1; }
  echo "$d"
}
edit_source() { printf '\nexport const BENCH_MARK = "%s";\n' "$run_id" >>"$1/src/config.ts"; }
deps=$work/deps
mkdir -p "$deps"
cp "$repo/examples/$service/package.json" "$repo/examples/$service/package-lock.json" "$deps/"
(cd "$deps" && npm install --package-lock-only --prefer-offline --ignore-scripts --no-audit \
  --no-fund --omit-lockfile-registry-resolved --save "$extra_dep") >"$out/prepare-dep.log" 2>&1 ||
  { echo "npm could not add $extra_dep (see $out/prepare-dep.log)" >&2; exit 1; }
add_dependency() { cp "$deps/package.json" "$deps/package-lock.json" "$1/"; }
wide_ctx() { # dir: stages x steps RUN steps of random bytes, the last stage copying them
  mkdir -p "$1"
  {
    for s in $(seq "$wide_stages"); do
      echo "FROM $registry/library/busybox:latest AS s$s"
      for k in $(seq "$wide_steps"); do
        echo "RUN head -c $wide_bytes /dev/urandom > /f$k && echo $run_id-$s-$k > /id$k"
      done
    done
    echo "FROM $registry/library/busybox:latest"
    for s in $(seq "$wide_stages"); do echo "COPY --from=s$s /f$wide_steps /s$s"; done
  } >"$1/Dockerfile"
}

bk_ref=$registry/bench-fresh-$run_id/buildkit
rb_ref=$registry/bench-fresh-$run_id/rbuild
declare -A secs

row() { # name tool seconds
  secs[$1,$2]=$3
  log "$1 $2: $3 s (load $(cut -d' ' -f1 /proc/loadavg))"
}

fresh_row() { # name bk_ctx rb_ctx cache_tag
  local name=$1 bctx=$2 rctx=$3 tag=$4 t
  bk_start
  t=$(now)
  bk_build "$name" "$bctx" --import-cache "type=registry,ref=$bk_ref:$tag" \
    --output "type=image,name=$bk_ref:$name,push=true"
  row "$name" buildkit "$(since "$t")"
  bk_stop
  t=$(now)
  rb_build "$name" "$work/rb/$name" "$rctx" --cache-from "type=registry,ref=$rb_ref:$tag" \
    -t "$rb_ref:$name" --push --provenance=false
  row "$name" rbuild "$(since "$t")"
  rm -rf "$work/rb/$name"
}

# ---------------------------------------------------------------- runner A, then export
rows=""
if [[ $service_rows == yes ]]; then
  bk_ctx=$(ctx_for buildkit)
  rb_ctx=$(ctx_for rbuild)
  log "runner A: cold builds (not timed)"
  bk_start
  bk_build a-cold "$bk_ctx"
  t=$(now)
  bk_build export "$bk_ctx" --export-cache "type=registry,ref=$bk_ref:cache,mode=max"
  row export buildkit "$(since "$t")"
  bk_stop
  rb_build a-cold "$work/rb/a" "$rb_ctx"
  t=$(now)
  rb_build export "$work/rb/a" "$rb_ctx" --cache-to "type=registry,ref=$rb_ref:cache,mode=max"
  row export rbuild "$(since "$t")"
  rm -rf "$work/rb/a"

  fresh_row no-change "$bk_ctx" "$rb_ctx" cache
  grep -q "0 steps run" "$out/rbuild-no-change.log" ||
    log "warning: rbuild ran steps in the no-change row (see $out/rbuild-no-change.log)"
  edit_source "$bk_ctx"
  edit_source "$rb_ctx"
  fresh_row source "$bk_ctx" "$rb_ctx" cache
  add_dependency "$bk_ctx"
  add_dependency "$rb_ctx"
  fresh_row dependency "$bk_ctx" "$rb_ctx" cache
  grep -q "cache mount restored from" "$out/rbuild-dependency.log" ||
    log "warning: rbuild did not restore the npm cache mount (see $out/rbuild-dependency.log)"

  rows="export:0.8 no-change:0.3 source:0.7 dependency:0.6"
fi
if [[ $wide == yes ]]; then
  log "wide (buildx#3491): runner A exports $((wide_stages * wide_steps)) records"
  wide_ctx "$work/ctx/wide"
  bk_start
  bk_build wide-a "$work/ctx/wide" --export-cache "type=registry,ref=$bk_ref:wide,mode=max"
  bk_stop
  rb_build wide-a "$work/rb/wide-a" "$work/ctx/wide" --cache-to "type=registry,ref=$rb_ref:wide,mode=max"
  rm -rf "$work/rb/wide-a"
  fresh_row wide "$work/ctx/wide" "$work/ctx/wide" wide
  secs[wide-import,buildkit]=$(import_secs "$out/buildkit-wide.log")
  secs[wide-import,rbuild]=$(import_secs "$out/rbuild-wide.log")
  rows="$rows wide:- wide-import:-"
fi

printf '\nfresh runner (load average at the end: %s)\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-12s %10s %10s %8s %8s\n' row buildkit rbuild ratio target
for r in $rows; do
  name=${r%%:*}
  b=${secs[$name,buildkit]} x=${secs[$name,rbuild]}
  printf '%-12s %10s %10s %8s %8s\n' "$name" "$b" "$x" \
    "$(awk -v a="$x" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')" \
    "$([[ ${r##*:} == - ]] && echo - || echo "<=${r##*:}")"
done
echo "logs: $out"
