#!/usr/bin/env bash
# scripts/modes/compare.sh: the same Dockerfile built in each of the four privilege modes of
# issue 16, the manifest digests compared ("the image digests do not depend on the mode").
#
# Usage: scripts/modes/compare.sh [--rbuild PATH] [--image REF]
#   --rbuild PATH  the binary (default: target/release/rbuild)
#   --image REF    rbuild's own image for the container modes (images/rbuild); default:
#                  built from PATH with images/rbuild/build.sh into the local registry
#
# Modes:
#   root-host       root on this host: namespaces + overlayfs
#   rootless-host   the non-root user rbuild-test (subordinate ranges; scripts/testenv/up.sh)
#                   with setpriv: its own user namespace + overlayfs (userxattr)
#   root-container  root in `docker run` with the default seccomp profile and capabilities,
#                   no --privileged, --network host: unshare is refused, rbuild falls back to
#                   its chroot mode and says why on its first progress line
#   user-container  the image's non-root user in `docker run --security-opt
#                   seccomp=unconfined --security-opt apparmor=unconfined`: a user namespace
#                   mapped by the image's newuidmap; /proc cannot be mounted there (Docker
#                   masks parts of it), so steps run chroot-style too
# Each mode's first progress line (the sandbox it chose and why) is printed. The Dockerfile
# writes files owned by a non-root uid/gid, so owners are part of the comparison, and
# SOURCE_DATE_EPOCH=0 clamps the mtimes (otherwise two builds differ by their clocks only).
# Exit status: 0 all digests equal, 1 a difference or a failed build, 2 usage.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RBUILD=$HERE/../../target/release/rbuild
IMAGE=
while [ $# -gt 0 ]; do
  case $1 in
    --rbuild) RBUILD=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
RBUILD=$(realpath "$RBUILD")
[ -x "$RBUILD" ] || { echo "compare.sh: no rbuild binary at $RBUILD (cargo build --release -p rbuild)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "compare.sh: run as root (the root modes are compared)" >&2; exit 2; }
BASE=127.0.0.1:5000/library/busybox:latest

USER_NAME=rbuild-test
id -u "$USER_NAME" > /dev/null 2>&1 || { echo "compare.sh: no user $USER_NAME (scripts/testenv/up.sh makes it)" >&2; exit 2; }
if [ -z "$IMAGE" ]; then
  IMAGE=127.0.0.1:5000/rbuild-modes/rbuild:compare-$$
  "$HERE/../../images/rbuild/build.sh" --push -t "$IMAGE" --rbuild "$RBUILD" > /dev/null 2>&1 \
    || { echo "compare.sh: building rbuild's image failed (images/rbuild/build.sh)" >&2; exit 1; }
fi
docker pull -q "$IMAGE" > /dev/null

WORK=$(mktemp -d /var/tmp/rbuild-modes.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
chmod 0755 "$WORK"
mkdir -p "$WORK/ctx" "$WORK/out"
chmod 0777 "$WORK/out"
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
# rootless-host: the same private mount namespace, then the user (its home in /out)
mkdir -p "$WORK/out/home-rootless"
chown "$USER_NAME" "$WORK/out/home-rootless"
run_mode rootless-host unshare --mount sh -c \
  "mount --make-rprivate / && mkdir -p /ctx /out && mount --bind '$WORK/ctx' /ctx && mount --bind '$WORK/out' /out && exec setpriv --reuid=$USER_NAME --regid=$USER_NAME --clear-groups env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/out/home-rootless \"\$0\" \"\$@\"" \
  "$RBUILD"
chmod -R a+rX "$WORK/ctx"
run_mode root-container docker run --rm --network host --user 0 \
  -v "$WORK/ctx:/ctx:ro" -v "$WORK/out:/out" "$IMAGE" rbuild
run_mode user-container docker run --rm --network host \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
  -v "$WORK/ctx:/ctx:ro" -v "$WORK/out:/out" "$IMAGE" rbuild

digests=$(jq -r '."containerimage.digest"' "$WORK"/out/*.json | sort -u)
if [ "$(echo "$digests" | wc -l)" = 1 ]; then
  echo "equal: every mode built $digests"
else
  echo "DIFFERENT digests across modes" >&2; exit 1
fi
