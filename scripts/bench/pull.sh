#!/usr/bin/env bash
# scripts/bench/pull.sh: pull one platform of the Node base image (manifest, config, both
# layers, about 70 MB compressed) from the local registry into an OCI layout with
# registry-client (examples/pull.rs) and with `skopeo copy`, alternately, in the same run.
# Prints each tool's best time and our speed relative to skopeo's (target >= 0.8).
#
# Usage: scripts/bench/pull.sh [RUNS] [PLATFORM]   (defaults: 5 linux/amd64)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
PLATFORM=${2:-linux/amd64}
REGISTRY=${REGISTRY:-127.0.0.1:5000}
REF=$REGISTRY/library/node:20-slim
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

scripts/testenv/up.sh > /dev/null
cargo build --quiet --release -p registry-client --example pull
PULL=$CARGO_TARGET_DIR/release/examples/pull
IFS=/ read -r os arch variant <<< "$PLATFORM"
skopeo_platform=(--override-os "$os" --override-arch "$arch")
[ -z "${variant:-}" ] || skopeo_platform+=(--override-variant "$variant")

work=$(mktemp -d /var/tmp/rbuild-bench-pull.XXXXXX)
trap 'rm -rf "$work"' EXIT

# seconds (3 decimals) that "$@" takes
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l | xargs printf '%.3f'
}

best_ours=999999 best_skopeo=999999
for i in $(seq "$RUNS"); do
  rm -rf "$work/ours" "$work/skopeo"
  ours=$(seconds "$PULL" "$REF" "$work/ours" --platform "$PLATFORM" --quiet)
  skopeo=$(seconds skopeo copy --quiet --src-tls-verify=false "${skopeo_platform[@]}" \
             "docker://$REF" "oci:$work/skopeo:20-slim")
  printf 'run %d: registry-client %6.3f s   skopeo copy %6.3f s\n' "$i" "$ours" "$skopeo"
  best_ours=$(echo "if ($ours < $best_ours) $ours else $best_ours" | bc -l)
  best_skopeo=$(echo "if ($skopeo < $best_skopeo) $skopeo else $best_skopeo" | bc -l)
done

# the same blobs on both sides
diff <(cd "$work/ours/blobs" && find . -type f | sort) <(cd "$work/skopeo/blobs" && find . -type f | sort) > /dev/null ||
  { echo "error: the two layouts hold different blobs" >&2; exit 1; }
size=$(du -sb "$work/ours/blobs" | cut -f1)
ratio=$(echo "$best_skopeo / $best_ours" | bc -l)
printf '%s %s (%.1f MB): best of %d: registry-client %.3f s, skopeo copy %.3f s; speed vs skopeo: %.2fx\n' \
  "$REF" "$PLATFORM" "$(echo "$size / 1000000" | bc -l)" "$RUNS" "$best_ours" "$best_skopeo" "$ratio"
