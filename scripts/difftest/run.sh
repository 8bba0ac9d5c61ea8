#!/usr/bin/env bash
# Differential test of Dockerfile semantics: each case under scripts/difftest/cases/ is built
# by BuildKit (Debian's docker 20.10 client, DOCKER_BUILDKIT=1) and by rbuild, both images go
# into the same engine, and the two are compared:
#   config      docker image inspect: Config.{Env,Cmd,Entrypoint,WorkingDir,User,ExposedPorts,
#               Volumes,Labels,StopSignal,Healthcheck,Shell,OnBuild}, Architecture, Os and the
#               number of layers (RootFS.Layers)
#   filesystem  `docker export` of a container created from each image, listed as path, type,
#               mode, uid, gid, size, link target and the sha256 of each regular file (mtimes
#               and the files docker adds on create are left out)
#
# A case is a directory holding a Dockerfile and its context, optionally a .dockerignore and
# an `args` file: extra build flags on one line, such as `--build-arg X=1 --target t`, given
# to both tools. A case may FROM only the local registry's busybox and node:20-slim.
#
# A case may also hold a `known-diff` file: why rbuild deliberately differs from BuildKit
# 20.10 there (typically where newer BuildKit changed), and an `expected-diff` file: the
# changed lines that difference makes (`diff -U0` of BuildKit's listing against rbuild's,
# without the hunk headers). The case is printed as `known` and does not fail the run as
# long as its difference is exactly that; any other difference fails it. A known case that
# comes out the same is flagged.
#
# Left out because docker 20.10's builtin frontend predates them: heredocs (RUN <<EOF,
# COPY <<EOF), COPY --link/--parents/--exclude, ADD --checksum and git/HTTP sources (no
# network), the ${var#...}/${var%...}/${var/...} modifiers, and `# syntax=` (it would pull).
#
# Prints one line per case, `same`, `known` or `DIFF` followed by a compact diff, then a
# summary. Exits 1 when any case differs (other than known) or fails to build with either tool.
#
# usage: scripts/difftest/run.sh [--rbuild PATH] [--keep DIR] [CASE...]
#   --rbuild PATH  the rbuild binary (default: $CARGO_TARGET_DIR or target/, release build)
#   --keep DIR     keep the build logs, tarballs and listings in DIR (default: a temporary
#                  directory, removed on exit)
#   CASE           case names (directory names under cases/); default: every case
# Needs the test environment (scripts/testenv/up.sh). Images it makes carry the label
# org.rbuild.difftest=1 and are removed at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
docker=/usr/bin/docker
rbuild=""
keep=""
label=org.rbuild.difftest=1
cache_dir=/var/tmp/difftest-cache

usage() {
  sed -n '/^# usage:/,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
cases=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --rbuild) rbuild=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h | --help) usage ;;
    -*) usage ;;
    *) cases+=("$1"); shift ;;
  esac
done
rbuild=${rbuild:-${CARGO_TARGET_DIR:-$repo/target}/release/rbuild}
[[ -x $rbuild ]] || { echo "no rbuild binary at $rbuild (cargo build --release -p rbuild)" >&2; exit 2; }
if [[ ${#cases[@]} -eq 0 ]]; then
  for d in "$here"/cases/*/; do cases+=("$(basename "$d")"); done
fi
for c in "${cases[@]}"; do
  [[ -f $here/cases/$c/Dockerfile ]] || { echo "no case named $c" >&2; exit 2; }
done
$docker info >/dev/null 2>&1 || { echo "docker engine not reachable (scripts/testenv/up.sh)" >&2; exit 2; }

if [[ -n $keep ]]; then
  mkdir -p "$keep"
  work=$(cd "$keep" && pwd)
else
  work=$(mktemp -d /tmp/rbuild-difftest.XXXXXX)
fi
run_id=$(date +%s)-$$

cleanup() {
  local ids
  mapfile -t ids < <($docker ps -aq --filter "label=$label")
  [[ ${#ids[@]} -eq 0 ]] || $docker rm -f "${ids[@]}" >/dev/null 2>&1 || true
  mapfile -t ids < <($docker images -q --filter "label=$label" | sort -u)
  [[ ${#ids[@]} -eq 0 ]] || $docker rmi -f "${ids[@]}" >/dev/null 2>&1 || true
  [[ -n $keep ]] || rm -rf "$work"
}
trap cleanup EXIT

# The image fields compared, one JSON document with sorted keys.
config_of() {
  $docker image inspect "$1" | python3 -c '
import json, sys
img = json.load(sys.stdin)[0]
cfg = img.get("Config") or {}
keys = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
        "Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild"]
out = {k: cfg.get(k) for k in keys}
# Empty and missing mean the same to the engine.
out = {k: (v if v not in ("", [], {}) else None) for k, v in out.items()}
if out["Labels"]:
    out["Labels"].pop("org.rbuild.difftest", None)
    out["Labels"] = out["Labels"] or None
out["Architecture"] = img.get("Architecture")
out["Os"] = img.get("Os")
out["Layers"] = len((img.get("RootFS") or {}).get("Layers") or [])
for k, v in sorted(out.items()):
    print(f"config {k} = {json.dumps(v, sort_keys=True)}")
'
}

# The filesystem of a container created from the image, one line per entry.
fs_of() {
  local cid
  cid=$($docker create --label "$label" "$1" /bin/true)
  $docker export "$cid" | python3 -c '
import hashlib, sys, tarfile
skip = {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf"}
skip_dirs = ("proc", "sys", "dev")
types = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d",
         tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c",
         tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p"}
rows = []
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
    for m in tar:
        name = m.name.lstrip("./").rstrip("/")
        if not name or name in skip or name.split("/")[0] in skip_dirs:
            continue
        digest = ""
        if m.isreg():
            digest = hashlib.sha256(tar.extractfile(m).read()).hexdigest()[:16]
        link = m.linkname if (m.issym() or m.islnk()) else ""
        t = types.get(m.type, m.type.decode(errors="replace"))
        rows.append(f"fs /{name} {t} {m.mode & 0o7777:04o} {m.uid}:{m.gid} {m.size} {link} {digest}".rstrip())
print("\n".join(sorted(rows)))
'
  $docker rm "$cid" >/dev/null
}

total=0
differ=0
known=0
for c in "${cases[@]}"; do
  total=$((total + 1))
  dir=$here/cases/$c
  out=$work/$c
  mkdir -p "$out"
  extra=()
  if [[ -f $dir/args ]]; then
    read -r -a extra <"$dir/args"
  fi
  bk_tag=rbuild-difftest/$c:buildkit-$run_id
  rb_tag=rbuild-difftest/$c:rbuild-$run_id
  start=$(date +%s)
  if ! DOCKER_BUILDKIT=1 $docker build --network host --label "$label" -t "$bk_tag" \
    "${extra[@]}" "$dir" >"$out/buildkit.log" 2>&1; then
    printf '%-28s FAIL  buildkit: %s\n' "$c" "$(grep -m1 -iE 'error|failed' "$out/buildkit.log" || tail -1 "$out/buildkit.log")"
    differ=$((differ + 1))
    continue
  fi
  if ! "$rbuild" build --progress plain --network host --cache-dir "$cache_dir" \
    --label "$label" -t "$rb_tag" -o "type=docker,dest=$out/rbuild.tar" \
    "${extra[@]}" "$dir" >"$out/rbuild.log" 2>&1; then
    printf '%-28s FAIL  rbuild: %s\n' "$c" "$(grep -m1 -iE 'error' "$out/rbuild.log" || tail -1 "$out/rbuild.log")"
    differ=$((differ + 1))
    continue
  fi
  $docker load -i "$out/rbuild.tar" >/dev/null
  for tool in buildkit rbuild; do
    tag=$bk_tag
    [[ $tool == rbuild ]] && tag=$rb_tag
    { config_of "$tag"; fs_of "$tag"; } >"$out/$tool.txt"
  done
  secs=$(($(date +%s) - start))
  if diff -q "$out/buildkit.txt" "$out/rbuild.txt" >/dev/null; then
    note=""
    [[ ! -f $dir/known-diff ]] || note="; marked known-diff but the same: remove the file"
    printf '%-28s same  (%ss%s)\n' "$c" "$secs" "$note"
  else
    diff -U0 "$out/buildkit.txt" "$out/rbuild.txt" | grep -E '^[-+][^-+]' >"$out/diff.txt" || true
    if [[ -f $dir/known-diff ]] && cmp -s "$out/diff.txt" "$dir/expected-diff"; then
      known=$((known + 1))
      printf '%-28s known (%ss): %s\n' "$c" "$secs" "$(head -1 "$dir/known-diff")"
      continue
    fi
    differ=$((differ + 1))
    if [[ -f $dir/known-diff ]]; then
      printf '%-28s DIFF  (%ss; not the expected-diff of this known case; - buildkit, + rbuild)\n' "$c" "$secs"
    else
      printf '%-28s DIFF  (%ss; - buildkit, + rbuild)\n' "$c" "$secs"
    fi
    head -20 "$out/diff.txt" | sed 's/^/    /'
  fi
done

echo "summary: $total cases, $((total - differ - known)) same, $known known differences, $differ differ or failed"
[[ -z $keep ]] || echo "logs and listings in $work"
[[ $differ -eq 0 ]]
