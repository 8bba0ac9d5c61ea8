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
#                                [--multiarch-only] [--repeat N] [--timeline] [--rbuild PATH]
#                                [--out DIR]
#   --multiarch-only  skip the single-platform rows
#   --repeat N        run every row N times (default 1), the tools taking turns row by row
#                     (BuildKit first in odd passes, rbuild first in even ones); the table
#                     gives the median of each tool, then every run
#   --timeline        rbuild runs with --progress=rawjson and each row's log is followed by
#                     `rbuild debug timeline` of it (rbuild-ROW-SERVICE.timeline in --out)
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
timeline=""
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
    --timeline) timeline=yes; shift ;;
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
# "-N" in the log names of the Nth pass when --repeat is above 1.
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
    --local "dockerfile=$ctx" "$@" >"$out/buildkit-$name$pass.log" 2>&1
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
    record "$row" "$service" buildkit n/a - "BuildKit failed: see $out/buildkit-$row-$service$pass.log"
  fi
}

bk_push() { # ctx service
  local fresh=$registry/bench-$run_id/$2-buildkit$pass:latest
  bk_build "push-$2" "$1" --output "type=image,name=$fresh,push=true"
}

bk_multiarch() { # service ctx (caches emptied by the caller, outside the timing)
  bk_build "multi-arch-$1" "$2" --opt platform=linux/amd64,linux/arm64
}

bk_arm64_alone() { # service ctx (caches emptied by the caller, outside the timing)
  bk_build "arm64-alone-$1" "$2" --opt platform=linux/arm64
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
  /usr/bin/time -v -o "$logf.time" "$rbuild" build --cache-dir "$cache" --progress "$rb_progress" \
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
    if [[ -n $timeline ]]; then
      "$rbuild" debug timeline "$logf" >"${logf%.log}.timeline" 2>&1 || log "no timeline for $logf"
    fi
  else
    first=$(grep -m1 -iE '^(error|fatal)' "$logf" || grep -m1 -v '^[[:space:]]*$' "$logf" || echo "exit status without output")
    record "$row" "$service" rbuild n/a - "rbuild failed: ${first:0:160}"
  fi
}

# ---------------------------------------------------------------------------------------
# One pass of the single-platform rows of a service, the tools taking turns row by row
# (each tool on its own copy of the example and its own cache, so neither sees the other's
# state): `first` runs each row first.

single_pass() { # service first(buildkit|rbuild)
  local service=$1 first=$2 bk_ctx="" rb_ctx="" bk_note="" rb_cache=$work/rbuild-cache-$1
  local rb_tag=$registry/bench-$run_id/$1-rbuild-local$pass:latest
  if want buildkit; then
    bk_ctx=$(copy_example buildkit "$service")
    bk_note=$(bk_empty_caches)
  fi
  if want rbuild; then
    rb_ctx=$(copy_example rbuild "$service")
    rm -rf "$rb_cache"
  fi
  turn() { # row: runs the row for both tools, $first first
    local row=$1 t
    for t in $first $([[ $first == buildkit ]] && echo rbuild || echo buildkit); do
      want "$t" || continue
      case $t/$row in
        buildkit/cold) bk_row cold "$service" "$bk_note" bk_build "cold-$service" "$bk_ctx" ;;
        buildkit/push) bk_row push "$service" "" bk_push "$bk_ctx" "$service" ;;
        buildkit/*) bk_row "$row" "$service" "" bk_build "$row-$service" "$bk_ctx" ;;
        rbuild/push) rb_row push "$service" "$rb_cache" "$rb_ctx" \
          -t "$registry/bench-$run_id/$service-rbuild$pass:latest" --push --provenance=false ;;
        rbuild/*) rb_row "$row" "$service" "$rb_cache" "$rb_ctx" -t "$rb_tag" ;;
      esac
    done
  }
  turn cold
  turn warm
  [[ -n $bk_ctx ]] && edit_source "$bk_ctx"
  [[ -n $rb_ctx ]] && edit_source "$rb_ctx"
  turn source
  if [[ -n ${dep_dir[$service]} ]]; then
    [[ -n $bk_ctx ]] && add_dependency "$bk_ctx" "${dep_dir[$service]}"
    [[ -n $rb_ctx ]] && add_dependency "$rb_ctx" "${dep_dir[$service]}"
    turn dependency
  else
    want buildkit && record dependency "$service" buildkit n/a - "npm could not prepare the dependency"
    want rbuild && record dependency "$service" rbuild n/a - "npm could not prepare the dependency"
  fi
  turn push
  rm -rf "$rb_cache"
}

rb_arm64_alone() { # service
  local service=$1 ctx cache=$work/rbuild-cache-arm64-$1
  ctx=$(copy_example rbuild "$service")
  rm -rf "$cache"
  rb_row arm64-alone "$service" "$cache" "$ctx" --platform linux/arm64 \
    -t "$registry/bench-$run_id/$service-rbuild-arm64$pass:latest"
  rm -rf "$cache"
}

rb_multiarch() { # service
  local service=$1 ctx cache=$work/rbuild-cache-multiarch-$1
  ctx=$(copy_example rbuild "$service")
  rm -rf "$cache"
  rb_row multi-arch "$service" "$cache" "$ctx" --platform linux/amd64,linux/arm64 \
    -t "$registry/bench-$run_id/$service-rbuild-multiarch$pass:latest"
  rm -rf "$cache"
}

bk_multiarch_rows() { # service
  local ctx note
  ctx=$(copy_example buildkit "$1")
  note=$(bk_empty_caches)
  bk_row multi-arch "$1" "$note" bk_multiarch "$1" "$ctx"
  note=$(bk_empty_caches)
  bk_row arm64-alone "$1" "$note" bk_arm64_alone "$1" "$ctx"
}

# ---------------------------------------------------------------------------------------
# Set-up

buildctl debug workers >/dev/null 2>&1 || { echo "the reference BuildKit does not answer at $buildkit_addr: run scripts/testenv/up.sh" >&2; exit 1; }
curl -fsS "http://$registry/v2/" >/dev/null || { echo "no registry on $registry: run scripts/testenv/up.sh" >&2; exit 1; }

rb_progress=plain
[[ -n $timeline ]] && rb_progress=rawjson
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

for ((i = 1; i <= repeat; i++)); do
  ((repeat > 1)) && pass=-$i
  first=buildkit
  ((i % 2 == 0)) && first=rbuild
  if [[ -n $single ]]; then
    for s in "${service_list[@]}"; do single_pass "$s" "$first"; done
  fi
  if [[ -n $multiarch ]]; then
    for s in "${service_list[@]}"; do
      if [[ $first == buildkit ]]; then
        want buildkit && bk_multiarch_rows "$s"
        want rbuild && { rb_multiarch "$s"; rb_arm64_alone "$s"; }
      else
        want rbuild && { rb_multiarch "$s"; rb_arm64_alone "$s"; }
        want buildkit && bk_multiarch_rows "$s"
      fi
    done
  fi
done

# ---------------------------------------------------------------------------------------
# The table

target_of() {
  case $1 in
    cold) echo "<= 0.7x" ;;
    warm) echo "<= 0.15x" ;;
    source) echo "<= 0.5x" ;;
    dependency) echo "<= 0.6x" ;;
    push) echo "<= 0.3x" ;;
    multi-arch) echo "<= 1.02x arm64-alone" ;;
    arm64-alone) echo "(floor)" ;;
    *) echo "-" ;;
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
      # The peaks: the largest over the runs of the row.
      rss=$(awk -F'\t' -v r="$row" -v s="$service" '$1 == r && $2 == s && $3 == "rbuild" && $5 ~ /^[0-9]+$/ && $5 + 0 > v + 0 { v = $5 } END { print (v == "" ? "-" : v) }' "$results")
      note=$(awk -F'\t' -v r="$row" -v s="$service" '$1 == r && $2 == s && $3 == "rbuild" { v = $6 } END { print v }' "$results")
      own=$(awk -F'\t' -v r="$row" -v s="$service" '$1 == r && $2 == s && $3 == "rbuild" && $7 ~ /^[0-9]+$/ && $7 + 0 > v + 0 { v = $7 } END { print (v == "" ? "-" : v) }' "$results")
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
  # The multi-arch target is against rbuild's own arm64-alone time.
  for service in "${service_list[@]}"; do
    ma=$(seconds multi-arch "$service" rbuild)
    a64=$(seconds arm64-alone "$service" rbuild)
    if [[ $ma =~ ^[0-9.]+$ && $a64 =~ ^[0-9.]+$ ]]; then
      awk -v m="$ma" -v a="$a64" -v s="$service" 'BEGIN { if (a > 0) printf "rbuild multi-arch / arm64-alone, %s: %.3fx (target <= 1.02x)\n", s, m / a }'
    fi
  done
  runs
  awk -F'\t' '$6 != "" && $3 == "buildkit" { printf "note: %s %s, BuildKit: %s\n", $1, $2, $6 }' "$results"
} | tee "$out/table.md"
# Leave the reference BuildKit without the bench's cache.
if want buildkit; then buildctl prune --all >/dev/null 2>&1 || true; fi
log "logs and results: $out"
