#!/usr/bin/env bash
# scripts/bench/layer-pack-apply.sh: layer-cache's tar writer and applier against GNU tar
# and pigz, on the Node base image's root filesystem (Debian rootfs + Node layer, about
# 200 MB), alternately in the same run.
#
#   pack:  layer-bench pack (tar -> sha256 -> parallel gzip -> sha256 -> file)
#          vs  tar -cf - . | pigz -N -p CORES > file        same gzip level
#   apply: layer-bench apply LAYER.tgz DIR  vs  tar -xzf LAYER.tgz -C DIR
#
# Prints each side's best time and the ratio (ours relative to theirs, higher is better;
# targets: pack >= 1.0, apply >= 0.8).
#
# Usage: scripts/bench/layer-pack-apply.sh [RUNS] [LEVEL]   (defaults: 5 6)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
LEVEL=${2:-6}
BASE=${BASE:-/var/tmp/rbuild-testenv/base/node}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
CORES=$(nproc)

for f in rootfs-amd64.tar node-amd64.tar; do
  [ -f "$BASE/$f" ] || scripts/testenv/up.sh > /dev/null
done
cargo build --quiet --release -p layer-cache --example layer-bench
BENCH=$CARGO_TARGET_DIR/release/examples/layer-bench

work=$(mktemp -d /var/tmp/rbuild-bench-layer.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/rootfs"
tar -xpf "$BASE/rootfs-amd64.tar" -C "$work/rootfs"
tar -xpf "$BASE/node-amd64.tar" -C "$work/rootfs"
size=$(du -sb "$work/rootfs" | cut -f1)
echo "rootfs: $((size / 1000000)) MB, $(find "$work/rootfs" | wc -l) entries, $CORES cores, gzip level $LEVEL"
tar -cf /dev/null -C "$work/rootfs" . # warm the page cache

# seconds (3 decimals) that "$@" takes
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
min() { printf '%s\n' "$@" | sort -g | head -1; }

pigz_pack() { tar -cf - -C "$work/rootfs" . | pigz "-$LEVEL" -p "$CORES" > "$work/pigz.tgz"; sync -f "$work/pigz.tgz"; }
ours_pack() { "$BENCH" pack "$work/rootfs" "$work/ours.tgz" --level "$LEVEL"; }

pack_ours=(); pack_pigz=(); apply_ours=(); apply_gnu=()
for i in $(seq "$RUNS"); do
  pack_pigz+=("$(seconds pigz_pack)")
  pack_ours+=("$(seconds ours_pack)")
  # Timed without the removal of the previous tree.
  rm -rf "$work/x"; sync
  apply_gnu+=("$(seconds bash -c "mkdir '$work/x' && tar -xzf '$work/ours.tgz' -C '$work/x'")")
  rm -rf "$work/x"; sync
  apply_ours+=("$(seconds "$BENCH" apply "$work/ours.tgz" "$work/x")")
  echo "run $i: pack ours ${pack_ours[-1]}s pigz ${pack_pigz[-1]}s | apply ours ${apply_ours[-1]}s tar ${apply_gnu[-1]}s"
done
# Byte-identical output whatever the thread count.
d1=$("$BENCH" pack "$work/rootfs" "$work/t1.tgz" --level "$LEVEL" --threads 1 | grep -o 'digest=[^ ]*')
dn=$("$BENCH" pack "$work/rootfs" "$work/tn.tgz" --level "$LEVEL" --threads "$((CORES * 2))" | grep -o 'digest=[^ ]*')
[ "$d1" = "$dn" ] || { echo "NOT DETERMINISTIC: 1 thread $d1, $((CORES * 2)) threads $dn" >&2; exit 1; }
echo "deterministic: 1 and $((CORES * 2)) threads give $d1"
echo "sizes: ours $(stat -c %s "$work/ours.tgz") bytes, pigz $(stat -c %s "$work/pigz.tgz") bytes"
po=$(min "${pack_ours[@]}"); pp=$(min "${pack_pigz[@]}")
ao=$(min "${apply_ours[@]}"); ag=$(min "${apply_gnu[@]}")
printf 'pack  (tar+gzip -%s): ours %ss  tar|pigz %ss  ratio %.2f (target >= 1.0)\n' "$LEVEL" "$po" "$pp" "$(awk -v a="$pp" -v b="$po" 'BEGIN { print a / b }')"
printf 'apply (gzip layer):   ours %ss  tar -xzf %ss  ratio %.2f (target >= 0.8)\n' "$ao" "$ag" "$(awk -v a="$ag" -v b="$ao" 'BEGIN { print a / b }')"
