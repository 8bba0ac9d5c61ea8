#!/usr/bin/env bash
# Whole-build benchmark (issues 7, 8 and 14): the reference BuildKit (buildkitd v0.32.2 from
# ../shared/reference-buildkit, OCI worker, driven by buildctl) against rbuild on the example
# services, on this machine, in one run.
#
# Rows, per service, each tool starting from the state the previous row left:
#   cold          caches emptied, base image pulled during the build
#                 (BuildKit: `buildctl prune --all`; rbuild: a fresh --cache-dir). Neither
#                 tool exports the image in the cold/warm/source/dependency rows: buildctl
#                 runs without --output, rbuild without -o/--push (so it packs no layer).
#   warm          the same build again, nothing changed
#   source        one .ts file edited (in a temporary copy of the example, never the
#                 committed files)
#   dependency    one small dependency added to package.json and the lockfile
#   push          the image pushed to an empty repository on the local registry, warm
#                 (BuildKit: `--output type=image,name=REF,push=true`; rbuild: `--push
#                 --provenance=false`, as neither then attaches an attestation)
#   multi-arch    cold, linux/amd64 and linux/arm64 in one build each (issue 8)
#   arm64-alone   the floor of the multi-arch row: a cold build of linux/arm64 alone by
#                 each tool. Both run the same emulated steps under the machine's QEMU
#                 (binfmt_misc).
#
# Prints seconds per tool, the ratio rbuild/BuildKit and rbuild's peak memory, twice: rbuild's
# own (VmHWM of the rbuild process, sampled every 0.1 s) and with its RUN steps (maximum RSS
# from /usr/bin/time -v: the largest single process, rbuild or a RUN step it waited for, such
# as npm or tsc). Each row also gives the 1-minute load average when it started: the machine
# may be shared.
# A row whose rbuild build fails prints "n/a (rbuild failed: <first line of the error>)";
# BuildKit's figures are printed regardless.
#
# usage: scripts/bench/builds.sh [--only buildkit|rbuild] [--services a,b] [--no-multiarch]
#                                [--multiarch-only] [--repeat N] [--rbuild PATH] [--out DIR]
#   --multiarch-only  skip the single-platform rows
#   --repeat N        run the multi-arch rows N times, the tools taking turns (default 1);
#                     the table gives the median of each tool and every run
# Needs the test environment (scripts/testenv/up.sh). Empties the reference BuildKit's cache.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
registry=127.0.0.1:5000
base_image=$registry/library/node:20-slim
buildctl_bin=${BUILDCTL:-/var/tmp/reference-buildkit/bin/buildctl}
buildkit_addr=${BUILDKIT_ADDR:-unix:///run/reference-buildkitd.sock}
buildctl() { "$buildctl_bin" --addr "$buildkit_addr" "$@"; }
only=""
services=auth-service,user-service
multiarch=yes
single=yes
repeat=1
rbuild=""
out=""
# The dependency the "dependency" row adds: small, no dependencies, not in either tree.
extra_dep=picocolors@1.1.1

usage() {
  sed -n '/^# usage:/,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while [[ $# -gt 0 ]]; do
  case $1 in
    --only) only=$2; [[ $only == buildkit || $only == rbuild ]] || usage; shift 2 ;;
    --services) services=$2; shift 2 ;;
    --no-multiarch) multiarch=""; shift ;;
    --multiarch-only) single=""; shift ;;
    --repeat) repeat=$2; [[ $repeat =~ ^[1-9][0-9]*$ ]] || usage; shift 2 ;;
    --rbuild) rbuild=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
done
IFS=, read -r -a service_list <<<"$services"
for s in "${service_list[@]}"; do
  [[ -f $repo/examples/$s/Dockerfile ]] || { echo "no example named $s" >&2; exit 2; }
done
want() { [[ -z $only || $only == "$1" ]]; }

out=${out:-$(mktemp -d /tmp/rbuild-bench.XXXXXX)}
mkdir -p "$out"
work=$(mktemp -d /tmp/rbuild-bench-work.XXXXXX)
trap 'rm -rf "$work"' EXIT
run_id=$(date +%Y%m%d%H%M%S)-$$
# Every image the bench builds carries this label, so the next cold row can remove them all.
bench_label=org.rbuild.bench=1
log() { echo "[bench] $*" >&2; }

now() { date +%s.%N; }
since() { awk -v s="$1" -v n="$(now)" 'BEGIN { printf "%.2f", n - s }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------------------------------
# Results: one line per (row, service, tool) in $out/results.tsv:
#   row  service  tool  seconds|n/a  max_rss_kb|-  note  own_rss_kb|-  load
# (load: the 1-minute load average when the row started, set by the callers in $row_load)
results=$out/results.tsv
: >"$results"
row_load=""
# "-N" in the log names of the Nth multi-arch pass when --repeat is above 1.
pass=""
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "${7:--}" "$row_load" >>"$results"; }

# ---------------------------------------------------------------------------------------
# The example trees: a pristine copy per (tool, service), so each tool sees the same edits.
copy_example() { # tool service -> path
  local dest=$work/$1/$2
  rm -rf "$dest"
  mkdir -p "$dest"
  (cd "$repo/examples/$2" && tar --exclude=./node_modules --exclude=./dist -cf - .) | tar -xf - -C "$dest"
  echo "$dest"
}

# The source edit: one line appended to src/config.ts (a new export, so tsc's output changes).
edit_source() {
  printf '\nexport const BENCH_MARK = "%s";\n' "$run_id" >>"$1/src/config.ts"
  touch "$1/src/config.ts"
}

# package.json and package-lock.json with $extra_dep added, prepared once per service before
# any timing. npm resolves it from its cache when it can (--prefer-offline); resolved URLs
# are left out of the lockfile as in the committed ones.
prepare_dependency() { # service -> dir holding the two files, or "" when npm failed
  local dir=$work/deps/$1
  mkdir -p "$dir"
  cp "$repo/examples/$1/package.json" "$repo/examples/$1/package-lock.json" "$dir/"
  if (cd "$dir" && npm install --package-lock-only --prefer-offline --ignore-scripts --no-audit \
    --no-fund --omit-lockfile-registry-resolved --save "$extra_dep") >"$out/prepare-dep-$1.log" 2>&1; then
    echo "$dir"
  else
    log "npm could not add $extra_dep for $1 (see $out/prepare-dep-$1.log)"
    echo ""
  fi
}
add_dependency() { cp "$2/package.json" "$2/package-lock.json" "$1/"; }

# ---------------------------------------------------------------------------------------
# BuildKit

bk_build() { # log_name context [extra buildctl build args...]
  local name=$1 ctx=$2
  shift 2
  buildctl build --progress plain --frontend dockerfile.v0 --local "context=$ctx" \
    --local "dockerfile=$ctx" "$@" >"$out/buildkit-$name.log" 2>&1
}

# Empties BuildKit's cache (build records, snapshots and the pulled base layers), so that
# the next build pulls the base image. Prints a note for the row when that failed.
bk_empty_caches() {
  if ! buildctl prune --all >/dev/null 2>&1; then
    log "warning: buildctl prune --all failed"
    echo "not cold: buildctl prune failed"
    return
  fi
  local left
  left=$(buildctl du 2>/dev/null | awk '/^Total:/ { print $2 }')
  [[ -z $left || $left == 0B || $left == 0 ]] || echo "not cold: $left left in BuildKit's cache"
}

bk_row() { # row service note command...
  local row=$1 service=$2 note=$3 t0 secs
  shift 3
  log "buildkit  $row  $service"
  sync # the previous row's writes are not this one's
  row_load=$(load1)
  t0=$(now)
  if "$@"; then
    secs=$(since "$t0")
    record "$row" "$service" buildkit "$secs" - "$note"
  else
    record "$row" "$service" buildkit n/a - "BuildKit failed: see $out/buildkit-$row-$service*.log"
  fi
}

bk_push() { # ctx service
  local fresh=$registry/bench-$run_id/$2-buildkit:latest
  bk_build "push-$2" "$1" --output "type=image,name=$fresh,push=true"
}

bk_multiarch() { # service ctx (caches emptied by the caller, outside the timing)
  bk_build "multi-arch-$1$pass" "$2" --opt platform=linux/amd64,linux/arm64
}

bk_arm64_alone() { # service ctx (caches emptied by the caller, outside the timing)
  bk_build "arm64-alone-$1$pass" "$2" --opt platform=linux/arm64
}

run_buildkit() { # service
  local service=$1 ctx note
  ctx=$(copy_example buildkit "$service")
  note=$(bk_empty_caches)
  bk_row cold "$service" "$note" bk_build "cold-$service" "$ctx"
  bk_row warm "$service" "" bk_build "warm-$service" "$ctx"
  edit_source "$ctx"
  bk_row source "$service" "" bk_build "source-$service" "$ctx"
  if [[ -n ${dep_dir[$service]} ]]; then
    add_dependency "$ctx" "${dep_dir[$service]}"
    bk_row dependency "$service" "" bk_build "dependency-$service" "$ctx"
  else
    record dependency "$service" buildkit n/a - "npm could not prepare the dependency"
  fi
  bk_row push "$service" "" bk_push "$ctx" "$service"
}

# ---------------------------------------------------------------------------------------
# rbuild

# Samples the VmHWM (peak RSS) of the rbuild process that /usr/bin/time ($1) runs into the
# file $2 every 0.1 s until it exits (VmHWM only grows: the last sample is the peak, short
# of the last 0.1 s).
rb_sample_hwm() { # time_pid file
  local rpid="" v
  while kill -0 "$1" 2>/dev/null; do
    [[ -n $rpid ]] || rpid=$(pgrep -P "$1" -x rbuild | head -1) || true
    if [[ -n $rpid ]]; then
      v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$rpid/status" 2>/dev/null) || true
      [[ -n $v ]] && echo "$v" >"$2"
    fi
    sleep 0.1
  done
}

rb_row() { # row service cache_dir ctx [rbuild build args...]
  local row=$1 service=$2 cache=$3 ctx=$4 t0 secs rss own logf=$out/rbuild-$1-$2$pass.log first
  local tpid spid status
  shift 4
  log "rbuild    $row  $service"
  row_load=$(load1)
  if [[ -z $rbuild ]]; then
    record "$row" "$service" rbuild n/a - "rbuild failed: $rbuild_error"
    return
  fi
  rm -f "$logf.hwm"
  sync # the previous row's writes are not this one's
  t0=$(now)
  /usr/bin/time -v -o "$logf.time" "$rbuild" build --cache-dir "$cache" --progress plain \
    --network host --label "$bench_label" "$@" "$ctx" >"$logf" 2>&1 &
  tpid=$!
  rb_sample_hwm "$tpid" "$logf.hwm" &
  spid=$!
  status=0
  wait "$tpid" || status=$?
  secs=$(since "$t0")
  wait "$spid" || true
  if ((status == 0)); then
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$logf.time")
    own=$(cat "$logf.hwm" 2>/dev/null || true)
    record "$row" "$service" rbuild "$secs" "${rss:--}" "" "${own:--}"
  else
    first=$(grep -m1 -iE '^(error|fatal)' "$logf" || grep -m1 -v '^[[:space:]]*$' "$logf" || echo "exit status without output")
    record "$row" "$service" rbuild n/a - "rbuild failed: ${first:0:160}"
  fi
}

run_rbuild() { # service
  local service=$1 ctx cache tag=$registry/bench-$run_id/$1-rbuild-local:latest
  ctx=$(copy_example rbuild "$service")
  cache=$work/rbuild-cache-$service
  rm -rf "$cache"
  rb_row cold "$service" "$cache" "$ctx" -t "$tag"
  rb_row warm "$service" "$cache" "$ctx" -t "$tag"
  edit_source "$ctx"
  rb_row source "$service" "$cache" "$ctx" -t "$tag"
  if [[ -n ${dep_dir[$service]} ]]; then
    add_dependency "$ctx" "${dep_dir[$service]}"
    rb_row dependency "$service" "$cache" "$ctx" -t "$tag"
  else
    record dependency "$service" rbuild n/a - "npm could not prepare the dependency"
  fi
  rb_row push "$service" "$cache" "$ctx" -t "$registry/bench-$run_id/$service-rbuild:latest" --push --provenance=false
  rm -rf "$cache"
}

rb_arm64_alone() { # service
  local service=$1 ctx cache=$work/rbuild-cache-arm64-$1
  ctx=$(copy_example rbuild "$service")
  rm -rf "$cache"
  rb_row arm64-alone "$service" "$cache" "$ctx" --platform linux/arm64 \
    -t "$registry/bench-$run_id/$service-rbuild-arm64:latest"
  rm -rf "$cache"
}

rb_multiarch() { # service
  local service=$1 ctx cache=$work/rbuild-cache-multiarch-$1
  ctx=$(copy_example rbuild "$service")
  rm -rf "$cache"
  rb_row multi-arch "$service" "$cache" "$ctx" --platform linux/amd64,linux/arm64 \
    -t "$registry/bench-$run_id/$service-rbuild-multiarch:latest"
  rm -rf "$cache"
}

# ---------------------------------------------------------------------------------------
# Set-up

buildctl debug workers >/dev/null 2>&1 || { echo "the reference BuildKit does not answer at $buildkit_addr: run scripts/testenv/up.sh" >&2; exit 1; }
curl -fsS "http://$registry/v2/" >/dev/null || { echo "no registry on $registry: run scripts/testenv/up.sh" >&2; exit 1; }

rbuild_error="not built"
if want rbuild; then
  if [[ -z $rbuild ]]; then
    log "building rbuild (cargo build --release -p rbuild)"
    if (cd "$repo" && cargo build --release -p rbuild) >"$out/cargo-build.log" 2>&1; then
      rbuild=${CARGO_TARGET_DIR:-$repo/target}/release/rbuild
    else
      rbuild_error="cargo build failed: $(grep -m1 '^error' "$out/cargo-build.log" || tail -1 "$out/cargo-build.log")"
    fi
  fi
  [[ -z $rbuild || -x $rbuild ]] || { echo "not an executable: $rbuild" >&2; exit 2; }
fi

declare -A dep_dir
for s in "${service_list[@]}"; do dep_dir[$s]=$(prepare_dependency "$s"); done

log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); logs in $out"

# ---------------------------------------------------------------------------------------
# The runs

if [[ -n $single ]]; then
  for s in "${service_list[@]}"; do
    want buildkit && run_buildkit "$s"
    want rbuild && run_rbuild "$s"
  done
fi
if [[ -n $multiarch ]]; then
  for ((i = 1; i <= repeat; i++)); do
    ((repeat > 1)) && pass=-$i
    for s in "${service_list[@]}"; do
      if want buildkit; then
        ctx=$(copy_example buildkit "$s")
        note=$(bk_empty_caches)
        bk_row multi-arch "$s" "$note" bk_multiarch "$s" "$ctx"
        note=$(bk_empty_caches)
        bk_row arm64-alone "$s" "$note" bk_arm64_alone "$s" "$ctx"
      fi
      want rbuild && rb_multiarch "$s"
    want rbuild && rb_arm64_alone "$s"
    done
  done
fi

# ---------------------------------------------------------------------------------------
# The table

target_of() {
  case $1 in
    warm) echo "<= 0.5x; < 30 s" ;;
    cold) echo "<= 0.9x; < 300 s" ;;
    multi-arch) echo "<= 0.8x" ;;
    arm64-alone) echo "(floor)" ;;
    *) echo "<= 0.9x" ;;
  esac
}
# A tool's seconds for a row: the one figure, or with --repeat the median of the runs that
# succeeded; n/a when none did.
seconds() { # row service tool
  awk -F'\t' -v r="$1" -v s="$2" -v t="$3" '$1 == r && $2 == s && $3 == t {
      n++; if ($4 ~ /^[0-9.]+$/) v[++ok] = $4 }
    END {
      if (n == 0) exit
      if (ok == 0) { print "n/a"; exit }
      for (i = 2; i <= ok; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { x = v[j]; v[j] = v[j - 1]; v[j - 1] = x }
      printf "%s", (ok % 2 ? v[(ok + 1) / 2] : sprintf("%.2f", (v[ok / 2] + v[ok / 2 + 1]) / 2))
    }' "$results"
}
# Every run of a repeated row: "tool row service: a, b, c".
runs() {
  awk -F'\t' '{ k = $3 " " $1 " " $2; if (!c[k]++) { order[++n] = k; all[k] = $4 } else all[k] = all[k] ", " $4 }
    END { for (i = 1; i <= n; i++) if (c[order[i]] > 1) print order[i] ": " all[order[i]] }' "$results"
}
table() {
  local row service bk rb rss own note ratio mem load
  printf '| %-11s | %-12s | %12s | %10s | %15s | %-16s | %-28s | %s |\n' \
    row service "BuildKit (s)" "rbuild (s)" "rbuild/BuildKit" target \
    "rbuild peak RSS: own / steps" "load (bk / rb)"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' ----------- ------------ -----------: \
    ---------: --------------: ---------------- ---------------------------: --------------:
  for row in cold warm source dependency push multi-arch arm64-alone; do
    for service in "${service_list[@]}"; do
      bk=$(seconds "$row" "$service" buildkit)
      rb=$(seconds "$row" "$service" rbuild)
      rss=$(awk -F'\t' -v r="$row" -v s="$service" '$1 == r && $2 == s && $3 == "rbuild" { v = $5 } END { print v }' "$results")
      note=$(awk -F'\t' -v r="$row" -v s="$service" '$1 == r && $2 == s && $3 == "rbuild" { v = $6 } END { print v }' "$results")
      own=$(awk -F'\t' -v r="$row" -v s="$service" '$1 == r && $2 == s && $3 == "rbuild" { v = $7 } END { print v }' "$results")
      load=$(awk -F'\t' -v r="$row" -v s="$service" '$1 == r && $2 == s { l[$3] = $8 }
        END { printf "%s / %s", (l["buildkit"] == "" ? "-" : l["buildkit"]), (l["rbuild"] == "" ? "-" : l["rbuild"]) }' "$results")
      [[ -z $bk && -z $rb ]] && continue
      ratio=-
      if [[ $bk =~ ^[0-9.]+$ && $rb =~ ^[0-9.]+$ ]]; then
        ratio=$(awk -v a="$rb" -v b="$bk" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
      fi
      mb() { if [[ $1 =~ ^[0-9]+$ ]]; then awk -v k="$1" 'BEGIN { printf "%.0f MB", k / 1024 }'; else echo -; fi; }
      mem="$(mb "$own") / $(mb "$rss")"
      [[ $own == - && $rss == - ]] && mem=-
      [[ $rb == n/a ]] && rb="n/a ($note)"
      [[ -z $rb ]] && rb="-"
      [[ -z $bk ]] && bk="-"
      [[ $bk == n/a ]] && bk="failed"
      printf '| %-11s | %-12s | %12s | %10s | %15s | %-16s | %28s | %14s |\n' \
        "$row" "$service" "$bk" "$rb" "$ratio" "$(target_of "$row")" "$mem" "$load"
    done
  done
}
{
  echo "rbuild benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(buildctl debug info 2>/dev/null | tr -s ' \n' ' ')"
  table
  runs
  awk -F'\t' '$6 != "" && $3 == "buildkit" { printf "note: %s %s, BuildKit: %s\n", $1, $2, $6 }' "$results"
} | tee "$out/table.md"
# Leave the reference BuildKit without the bench's cache.
if want buildkit; then buildctl prune --all >/dev/null 2>&1 || true; fi
log "logs and results: $out"
