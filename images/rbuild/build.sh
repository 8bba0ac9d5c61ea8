#!/usr/bin/env bash
# images/rbuild/build.sh: builds rbuild's own image with rbuild (self-hosting, issue 16).
#
# Usage: images/rbuild/build.sh -t REF [--rbuild PATH] [--push] [-- EXTRA rbuild build ARGS]
#   -t REF          the image reference (with --push: pushed there; else an OCI archive
#                   is written to ./rbuild-image.tar)
#   --rbuild PATH   the binary to put in the image and to build with
#                   (default: target/release/rbuild); its debug info is stripped in the copy
# The context is a temporary directory with the Dockerfile and the stripped binary: the
# binary is built on the host (cargo build --release -p rbuild), not in a container.
# Pass --build-arg BASE_IMAGE=... RUNTIME_IMAGE=... after -- to use other base images.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RBUILD=$HERE/../../target/release/rbuild
REF= PUSH=
while [ $# -gt 0 ]; do
  case $1 in
    -t) REF=$2; shift 2 ;;
    --rbuild) RBUILD=$2; shift 2 ;;
    --push) PUSH=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$REF" ] || { echo "build.sh: -t REF is required" >&2; exit 2; }
[ -x "$RBUILD" ] || { echo "build.sh: no rbuild binary at $RBUILD" >&2; exit 2; }
CTX=$(mktemp -d /var/tmp/rbuild-image.XXXXXX)
trap 'rm -rf "$CTX"' EXIT
cp "$HERE/Dockerfile" "$CTX/Dockerfile"
if command -v objcopy > /dev/null; then
  objcopy --strip-debug "$RBUILD" "$CTX/rbuild"
else
  cp "$RBUILD" "$CTX/rbuild"
fi
chmod 0755 "$CTX" "$CTX/rbuild"
if [ -n "$PUSH" ]; then
  OUT=(--push -t "$REF")
else
  OUT=(-t "$REF" -o "type=oci,dest=rbuild-image.tar")
fi
exec "$RBUILD" build --progress=plain "${OUT[@]}" "$@" "$CTX"
