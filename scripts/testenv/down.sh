#!/usr/bin/env bash
# scripts/testenv/down.sh: stop the daemons that up.sh started (the registry, dockerd), by the
# pids it recorded in $TESTENV_STATE/run, and the reference BuildKit (its own down.sh). Daemons that up.sh found already running are not
# touched. Registry storage and the image cache stay; the next up.sh starts from them.
set -euo pipefail
STATE=${TESTENV_STATE:-/var/lib/rbuild-testenv}
for name in registry dockerd; do
  pidfile=$STATE/run/$name.pid
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  # only if that pid is still the process we started (pids are reused)
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "^\(docker-registry\|dockerd\) "; then
    echo "[testenv] stopping $name (pid $pid)" >&2
    kill "$pid"
    for _ in $(seq 40); do [ -e "/proc/$pid" ] || break; sleep 0.25; done
  fi
  rm -f "$pidfile"
done
REFERENCE_BUILDKIT=${REFERENCE_BUILDKIT:-$(cd "$(dirname "$0")" && pwd)/../../../shared/reference-buildkit}
[ ! -x "$REFERENCE_BUILDKIT/down.sh" ] || "$REFERENCE_BUILDKIT/down.sh"
