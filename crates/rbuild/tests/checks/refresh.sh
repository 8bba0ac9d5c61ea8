#!/bin/sh
# Records what the reference BuildKit's check (the `frontend.lint` subrequest, whose
# result.txt is what `docker buildx build --call=check` prints after its "Check complete"
# line) says about each case: CASE/expected.txt. `args` (optional): `--build-arg K=V` and
# `--target T`, one per line. Run after adding a case; needs scripts/testenv/up.sh.
#   crates/rbuild/tests/checks/refresh.sh [CASE...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
buildctl=${BUILDCTL:-/var/tmp/reference-buildkit/bin/buildctl}
addr=${BUILDKIT_ADDR:-unix:///run/reference-buildkitd.sock}
cd "$here"
[ $# -gt 0 ] || set -- $(ls -d */ | tr -d /)
for case in "$@"; do
    opts=""
    if [ -f "$case/args" ]; then
        while read -r flag value; do
            case $flag in
                --build-arg) opts="$opts --opt build-arg:$value" ;;
                --target) opts="$opts --opt target=$value" ;;
                *) echo "$case/args: unknown flag $flag" >&2; exit 1 ;;
            esac
        done < "$case/args"
    fi
    # shellcheck disable=SC2086
    (cd "$case" && "$buildctl" --addr "$addr" build --frontend dockerfile.v0 \
        --local context=. --local dockerfile=. --opt requestid=frontend.lint $opts) \
        > "$case/expected.txt" 2> "$case/buildctl.log" || {
        echo "$case: buildctl failed (see $case/buildctl.log)" >&2; exit 1; }
    if grep -q ERROR "$case/buildctl.log"; then
        echo "$case: the reference reported an error (see $case/buildctl.log)" >&2; exit 1
    fi
    rm -f "$case/buildctl.log"
    echo "$case: $(grep -c '^WARNING:' "$case/expected.txt" || true) warnings"
done
