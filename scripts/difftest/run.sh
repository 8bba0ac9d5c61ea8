#!/usr/bin/env bash
# Differential test against the reference BuildKit (v0.32.2): see difftest.py for what is
# compared and what a case may hold.
# usage: scripts/difftest/run.sh [--rbuild PATH] [--keep DIR] [-j N] [CASE...]
# Needs the test environment (scripts/testenv/up.sh), which starts the reference BuildKit.
exec python3 "$(dirname "$0")/difftest.py" "$@"
