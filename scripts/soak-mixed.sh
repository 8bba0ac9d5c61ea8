#!/usr/bin/env bash
# Soak: BUILDS consecutive builds (default 200) in one process through the builder-core
# API, some failing and some cancelled, printing open fds, mounts, child processes,
# threads and RSS every 20 builds and the growth from build 20 to the end. The bounded
# version (60 builds, asserting no growth) is `cargo test -p builder-core --test soak`.
#
#   scripts/soak-mixed.sh [BUILDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/testenv/up.sh >/dev/null
cargo run -q -p builder-core --example soak_mixed -- "${1:-200}"
