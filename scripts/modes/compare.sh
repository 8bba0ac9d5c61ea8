#!/usr/bin/env bash
# scripts/modes/compare.sh: the same Dockerfile built in each privilege mode this host can
# offer, the manifest digests compared (issue 16: "the image digests do not depend on the
# mode").
#
# Usage: scripts/modes/compare.sh [--rbuild PATH]   (default: target/release/rbuild)
#
# Modes run today:
#   root-host       root on this host: namespaces + overlayfs
#   root-container  root in `docker run` with the default seccomp profile and capabilities,
#                   no --privileged, --network host: unshare is refused, rbuild falls back to
#                   its chroot mode and says why on its first progress line
# Each mode's first progress line (the sandbox it chose and why) is printed. The Dockerfile
# writes files owned by a non-root uid/gid, so owners are part of the comparison, and
# SOURCE_DATE_EPOCH=0 clamps the mtimes (otherwise two builds differ by their clocks only).
# The container gets the rbuild binary and the host's glibc bind-mounted read-only over the
# local registry's busybox image: no image has to be built for it.
# Exit status: 0 all digests equal, 1 a difference or a failed build, 2 usage.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RBUILD=$HERE/../../target/release/rbuild
while [ $# -gt 0 ]; do
  case $1 in
    --rbuild) RBUILD=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
RBUILD=$(realpath "$RBUILD")
[ -x "$RBUILD" ] || { echo "compare.sh: no rbuild binary at $RBUILD (cargo build --release -p rbuild)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "compare.sh: run as root (the root modes are compared)" >&2; exit 2; }
BASE=127.0.0.1:5000/library/busybox:latest

WORK=$(mktemp -d /tmp/rbuild-modes.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/ctx" "$WORK/out"
cat > "$WORK/ctx/Dockerfile" <<DF
FROM $BASE
RUN echo hi > /hi && echo "u:x:1234:1234::/:/bin/sh" >> /etc/passwd \\
 && chown 1234:1234 /hi && mkdir -m 0750 /d && chown 1234 /d && ln -s hi /hi.link
DF
ARGS=(build --progress=plain --no-cache --build-arg SOURCE_DATE_EPOCH=0)

run_mode() { # name, then the command line up to rbuild's arguments; /ctx and /out mapped
  local name=$1; shift
  local log=$WORK/$name.log
  if ! "$@" "${ARGS[@]}" --cache-dir "/out/cache-$name" \
      -o "type=oci,dest=/out/$name.tar" --metadata-file "/out/$name.json" /ctx > "$log" 2>&1; then
    echo "$name: build failed:" >&2; tail -n 20 "$log" >&2; return 1
  fi
  printf '%-15s %s  [%s]\n' "$name" "$(jq -r '."containerimage.digest"' "$WORK/out/$name.json")" \
    "$(grep -m1 'sandbox:' "$log" | sed 's/^#0 //')"
}

# root-host: /ctx and /out through a private mount namespace, as in the container
run_mode root-host unshare --mount sh -c \
  "mount --make-rprivate / && mkdir -p /ctx /out && mount --bind '$WORK/ctx' /ctx && mount --bind '$WORK/out' /out && exec \"\$0\" \"\$@\"" \
  "$RBUILD"
LIBS=()
for d in /lib/x86_64-linux-gnu /lib/aarch64-linux-gnu /lib64; do [ -d "$d" ] && LIBS+=(-v "$d:$d:ro"); done
run_mode root-container docker run --rm --network host "${LIBS[@]}" \
  -v "$RBUILD:/usr/local/bin/rbuild:ro" -v "$WORK/ctx:/ctx:ro" -v "$WORK/out:/out" "$BASE" rbuild

digests=$(jq -r '."containerimage.digest"' "$WORK"/out/*.json | sort -u)
if [ "$(echo "$digests" | wc -l)" = 1 ]; then
  echo "equal: every mode built $digests"
else
  echo "DIFFERENT digests across modes" >&2; exit 1
fi
