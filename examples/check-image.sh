#!/usr/bin/env bash
# Checks the seed's acceptance criteria on an example image that is in a registry:
#   - the image is under 200 MB compressed (sum of its layer and config blobs);
#   - the container answers GET /health within 10 s of `docker run` (--health-timeout N
#     for an emulated platform, where node starts several times slower);
#   - `id -u` in it is 1001, the user has no login shell, and no process runs as root;
#   - the service works (auth: login then verify; user: avatar upload then download);
#   - it stops within 10 s on `docker stop` (dumb-init forwards SIGTERM to node).
#
# usage: examples/check-image.sh auth-service|user-service REF [--platform P] [--port N]
#                                [--health-timeout SECONDS]
# REF is pulled with docker (plain HTTP for 127.0.0.1 registries). Needs docker, skopeo,
# jq, curl. Exit status 0 when every check passes; each check prints one line.
set -euo pipefail

usage() { echo "usage: $0 auth-service|user-service REF [--platform P] [--port N] [--health-timeout S]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
service=$1 ref=$2
shift 2
platform="" port="" health_timeout=10
while [[ $# -gt 0 ]]; do
  case $1 in
    --platform) platform=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --health-timeout) health_timeout=$2; shift 2 ;;
    *) usage ;;
  esac
done
case $service in
  auth-service) port=${port:-3001} ;;
  user-service) port=${port:-3002} ;;
  *) usage ;;
esac
docker=/usr/bin/docker
limit_bytes=$((200 * 1000 * 1000))
failures=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { # message-if-ok message-if-not command...
  local ok=$1 bad=$2
  shift 2
  if "$@"; then pass "$ok"; else fail "$bad"; fi
}

# --- size: the manifest for the platform (the host's when none is given)
want_os=linux want_arch=${platform#linux/}
want_arch=${want_arch%%/*}
[[ -n $want_arch ]] || want_arch=$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')
raw=$(skopeo inspect --raw --tls-verify=false "docker://$ref")
if jq -e '.manifests' >/dev/null <<<"$raw"; then
  digest=$(jq -r --arg os "$want_os" --arg arch "$want_arch" \
    '[.manifests[] | select(.platform.os == $os and .platform.architecture == $arch)][0].digest' <<<"$raw")
  [[ $digest != null ]] || { fail "no $want_os/$want_arch manifest in the index of $ref"; exit 1; }
  # The repository: without a digest, and without a tag (after the last '/', as a
  # registry's port also follows a ':').
  repo=${ref%@*}
  last=${repo##*/}
  [[ $last == *:* ]] && repo=${repo%:*}
  raw=$(skopeo inspect --raw --tls-verify=false "docker://$repo@$digest")
fi
size=$(jq '([.layers[].size] | add) + .config.size' <<<"$raw")
mb=$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1e6 }')
if ((size < limit_bytes)); then pass "compressed size $mb MB < 200 MB"; else fail "compressed size $mb MB >= 200 MB"; fi

# --- run
name="check-$service-$$"
# shellcheck disable=SC2317 # called by the trap
cleanup() { $docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
run_args=(--detach --name "$name" --network host -e "PORT=$port")
[[ -n $platform ]] && run_args+=(--platform "$platform")
[[ $service == auth-service ]] && run_args+=(-e JWT_SECRET=check-image-secret)
$docker pull ${platform:+--platform "$platform"} --quiet "$ref" >/dev/null
start=$(date +%s.%N)
$docker run "${run_args[@]}" "$ref" >/dev/null
healthy=""
while :; do
  curl -fsS --max-time 1 "http://127.0.0.1:$port/health" >/dev/null 2>&1 && healthy=yes
  # The answer counts when it came within the limit (not merely the request).
  elapsed=$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { print n - s }')
  awk -v e="$elapsed" -v l="$health_timeout" 'BEGIN { exit !(e > l) }' && { healthy=""; break; }
  [[ -n $healthy ]] && break
  sleep 0.2
done
elapsed=$(awk -v e="$elapsed" 'BEGIN { printf "%.1f", e }')
if [[ -n $healthy ]]; then pass "/health answered after ${elapsed}s (limit ${health_timeout} s)"; else
  fail "/health did not answer within $health_timeout s"; $docker logs "$name" 2>&1 | tail -20; exit 1
fi

# --- user and processes
uid=$($docker exec "$name" id -u)
check "id -u is 1001" "id -u is $uid, not 1001" test "$uid" = 1001
shell=$($docker exec "$name" getent passwd nodejs | cut -d: -f7)
check "nodejs has no login shell ($shell)" "nodejs's shell is $shell" test "$shell" = /usr/sbin/nologin
# No ps in the image: read every process's real, effective, saved and filesystem uids.
# shellcheck disable=SC2016 # expanded by the container's shell
procs=$($docker exec "$name" sh -c \
  'for s in /proc/[0-9]*/status; do awk -v f="$s" "/^Name:/ {n=\$2} /^Uid:/ {print f, n, \$2, \$3, \$4, \$5}" "$s" 2>/dev/null; done')
root=$(awk '$3 == 0 || $4 == 0 || $5 == 0 || $6 == 0' <<<"$procs")
count=$(wc -l <<<"$procs")
pid1=$(awk '$1 == "/proc/1/status" {print $2}' <<<"$procs")
check "no process runs as root ($count processes, PID 1 is $pid1)" "root processes: $root" test -z "$root"
check "PID 1 is dumb-init" "PID 1 is $pid1, not dumb-init" test "$pid1" = dumb-init

# --- the service itself
base="http://127.0.0.1:$port"
case $service in
  auth-service)
    token=$(curl -fsS -X POST -H 'content-type: application/json' \
      -d '{"username":"demo","password":"demo-password"}' "$base/login" | jq -r .token)
    valid=$(curl -fsS -H "Authorization: Bearer $token" "$base/verify" | jq -r '.valid and .sub == "demo"')
    bad=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${token}x" "$base/verify")
    check "login issues a JWT that /verify accepts (bcrypt, jsonwebtoken)" \
      "login/verify: valid=$valid, tampered token gave $bad" test "$valid:$bad" = true:401
    ;;
  user-service)
    # A 2x1 PNG (one red, one blue pixel).
    png=$(mktemp --suffix .png)
    base64 -d >"$png" <<<'iVBORw0KGgoAAAANSUhEUgAAAAIAAAABAQMAAADO7O3JAAAABlBMVEX/AAAAAP9sof2OAAAACklEQVQI12NwAAAAQgBBg7nsrQAAAABJRU5ErkJggg=='
    url=$(curl -fsS -F "avatar=@$png;type=image/png" "$base/avatar" | jq -r .url)
    rm -f "$png"
    got=$(curl -fsS "$base$url" | head -c 24 | od -An -tx1 | tr -d ' \n')
    # PNG signature, IHDR, width 128 (0x80), height 128.
    check "avatar upload gives a 128x128 PNG thumbnail (ImageMagick, file)" "avatar thumbnail: $got" \
      test "$got" = 89504e470d0a1a0a0000000d494844520000008000000080
    owner=$($docker exec "$name" stat -c '%U:%G %a' /app/uploads/avatars)
    check "uploads dir is nodejs:nodejs 750" "uploads dir is $owner" test "$owner" = "nodejs:nodejs 750"
    ;;
esac

# --- stop
t0=$(date +%s.%N)
$docker stop --time 10 "$name" >/dev/null
code=$($docker inspect --format '{{.State.ExitCode}}' "$name")
took=$(awk -v s="$t0" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')
check "docker stop: exit 0 after ${took}s" "docker stop: exit $code after ${took}s" test "$code" = 0

exit $((failures > 0))
