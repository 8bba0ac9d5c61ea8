#!/usr/bin/env bash
# Cold builds of an example service in each of the four build modes of issue 16, against
# root mode and the reference BuildKit (buildkitd v0.32.2, OCI worker, buildctl), on this
# machine, in one run.
#
# Rows (each a cold build: an empty --cache-dir, the base image pulled during the build,
# no output written, as scripts/bench/builds.sh's cold row):
#   buildkit         `buildctl prune --all`, then the build
#   root-host        rbuild as root on the host (namespaces + overlayfs)
#   rootless-host    rbuild as the non-root user rbuild-test (its own user namespace)
#   root-container   rbuild as root in `docker run`, default seccomp and capabilities
#                    (the unprivileged mode: chroot, copying snapshotter, walking differ)
#   user-container   rbuild as the image's user in `docker run --security-opt
#                    seccomp=unconfined --security-opt apparmor=unconfined`
#                    (rootless; steps chroot-style, /proc cannot be mounted there)
# Prints seconds, the ratio to root-host and to BuildKit, and the 1-minute load average
# when the row started (the machine may be shared).
#
# usage: scripts/bench/modes.sh [--rbuild PATH] [--image REF] [--service NAME]
#   --rbuild PATH  default target/release/rbuild
#   --image REF    rbuild's image for the container rows (default: built from PATH with
#                  images/rbuild/build.sh and pushed to the local registry)
#   --service      an example under examples/ (default auth-service)
# Needs the test environment (scripts/testenv/up.sh), root. Empties the reference
# BuildKit's cache.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
rbuild=$repo/target/release/rbuild
image=
service=auth-service
buildctl_bin=${BUILDCTL:-/var/tmp/reference-buildkit/bin/buildctl}
buildkit_addr=${BUILDKIT_ADDR:-unix:///run/reference-buildkitd.sock}
user_name=rbuild-test
while [[ $# -gt 0 ]]; do
  case $1 in
    --rbuild) rbuild=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --service) service=$2; shift 2 ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "modes.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
rbuild=$(realpath "$rbuild")
[[ -x $rbuild ]] || { echo "modes.sh: no rbuild at $rbuild" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "modes.sh: run as root" >&2; exit 2; }
[[ -f $repo/examples/$service/Dockerfile ]] || { echo "modes.sh: no example $service" >&2; exit 2; }
if [[ -z $image ]]; then
  image=127.0.0.1:5000/rbuild-bench/rbuild:modes-$$
  "$repo/images/rbuild/build.sh" --push -t "$image" --rbuild "$rbuild" > /dev/null 2>&1
fi
docker pull -q "$image" > /dev/null

work=$(mktemp -d /var/tmp/rbuild-bench-modes.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
ctx=$work/ctx
mkdir -p "$ctx"
(cd "$repo/examples/$service" && tar --exclude=./node_modules --exclude=./dist -cf - .) | tar -xf - -C "$ctx"
chmod -R a+rX "$ctx"

now() { date +%s.%N; }
declare -A secs load
row() { # name, command...
  local name=$1; shift
  load[$name]=$(cut -d' ' -f1 /proc/loadavg)
  local t0; t0=$(now)
  if "$@" > "$work/$name.log" 2>&1; then
    secs[$name]=$(awk -v s="$t0" -v n="$(now)" 'BEGIN { printf "%.1f", n - s }')
  else
    secs[$name]=n/a
    echo "[bench] $name failed: $(grep -m1 -i error "$work/$name.log" || tail -n1 "$work/$name.log")" >&2
  fi
  echo "[bench] $name: ${secs[$name]} s ($(grep -m1 'sandbox:' "$work/$name.log" | sed 's/^#0 //'))" >&2
}

"$buildctl_bin" --addr "$buildkit_addr" prune --all > /dev/null
row buildkit "$buildctl_bin" --addr "$buildkit_addr" build --progress=plain \
  --frontend dockerfile.v0 --local context="$ctx" --local dockerfile="$ctx"
args=(build --progress=plain)
row root-host "$rbuild" "${args[@]}" --cache-dir "$work/cache-root-host" "$ctx"
mkdir -p "$work/home"; chown "$user_name" "$work/home"
row rootless-host setpriv --reuid="$user_name" --regid="$user_name" --clear-groups \
  env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$work/home" "$rbuild" "${args[@]}" "$ctx"
mkdir -p "$work/c3" "$work/c4"; chown 1000:1000 "$work/c4"
row root-container docker run --rm --network host --user 0 -v "$ctx:/ctx:ro" \
  -v "$work/c3:/cache" "$image" rbuild "${args[@]}" --cache-dir /cache /ctx
row user-container docker run --rm --network host --security-opt seccomp=unconfined \
  --security-opt apparmor=unconfined -v "$ctx:/ctx:ro" -v "$work/c4:/cache" "$image" \
  rbuild "${args[@]}" --cache-dir /cache /ctx

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
printf '%-15s %8s %10s %12s %6s\n' mode seconds "/root-host" "/buildkit" load
for m in buildkit root-host rootless-host root-container user-container; do
  printf '%-15s %8s %10s %12s %6s\n' "$m" "${secs[$m]}" "$(ratio "${secs[$m]}" "${secs[root-host]}")" \
    "$(ratio "${secs[$m]}" "${secs[buildkit]}")" "${load[$m]}"
done
