#!/usr/bin/env bash
# Builds fuzz/corpus/parse from the seeds in fuzz/seeds/parse and the Dockerfiles of the
# conformance corpus (../shared/conformance/parser, or $RBUILD_CONFORMANCE/parser).
# The corpus directory is not committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
conf="${RBUILD_CONFORMANCE:-$here/../../shared/conformance}/parser"
out="$here/corpus/parse"
mkdir -p "$out"
cp "$here"/seeds/parse/* "$out"/
if [ -d "$conf" ]; then
    find "$conf" -type f \( -name Dockerfile -o -name '*.Dockerfile' -o -name '*.DOCKERFILE' \) -print0 |
        while IFS= read -r -d '' f; do
            rel="${f#"$conf"/}"
            cp "$f" "$out/conformance-${rel//\//_}"
        done
else
    echo "seed.sh: $conf not found; using fuzz/seeds only" >&2
fi
echo "seed corpus: $(find "$out" -type f | wc -l) files in $out"
