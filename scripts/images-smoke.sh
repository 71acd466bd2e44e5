#!/usr/bin/env bash
# Smoke-tests the images scripts/images.sh built, from their own root
# filesystems: each image is unpacked (podman create + export; running
# containers needs cgroups this sandbox lacks) and its entrypoint run under
# chroot as the image's user (65532), with the image's environment.
#
#   every image     entrypoint --version names the tag, --help exits 0,
#                   user 65532:65532, OCI labels, CA bundle present
#   relay           starts against a loopback nats-server (plain, no auth:
#                   the chart's TLS and NKeys are the binary's, not the
#                   image's) and answers /healthz and /readyz on its admin port
#   dashboard       starts (--no-auth, no ClickHouse needed to serve) and
#                   answers /healthz
#   web             serves /healthz, the app's index.html and a mounted
#                   candidates.json (the chart's ConfigMap, here a file)
#
# The collector's /healthz needs ClickHouse and the JetStream streams, so only
# its entrypoint is checked here. Only 127.0.0.1 is used.
#
#   scripts/images.sh && scripts/images-smoke.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

step() { echo "[images-smoke] $*" >&2; }
failures=0
passed=0
ok() { passed=$((passed + 1)); echo "[images-smoke] ok: $*" >&2; }
bad() { failures=$((failures + 1)); echo "[images-smoke] FAILED: $*" >&2; }
die() { echo "[images-smoke] FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "chroot needs root"
command -v podman >/dev/null || die "podman is missing: run scripts/images.sh first"
command -v curl >/dev/null || die "curl is missing: apt-get install curl"
if ! command -v nats-server >/dev/null; then
  eval "$(scripts/setup.sh run)" || die "nats-server is missing and scripts/setup.sh could not install it"
fi

registry="${IMAGE_REGISTRY:-$(awk '/^image:/ { i = 1; next } i && /^[^ ]/ { i = 0 } i && $1 == "registry:" { print $2; exit }' helm/rallypoint/values.yaml)}"
tag="${IMAGE_TAG:-$(awk -F'"' '/^appVersion:/ { print $2 }' helm/rallypoint/Chart.yaml)}"

work="$(mktemp -d /tmp/rallypoint-images-smoke.XXXXXX)"
pids=()
# stop PID: stops a background `in_image` (a subshell whose child is the
# image's process: killing the subshell alone left the server running) or
# any other background job, and waits for it.
stop() {
  pkill -TERM -P "$1" 2>/dev/null || true
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  for pid in "${pids[@]}"; do stop "$pid"; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http URL SECONDS PID: true once URL answers 2xx, false after SECONDS or when PID exits.
wait_http() {
  local url="$1" deadline=$(( $(date +%s) + $2 )) pid="$3"
  while [ "$(date +%s)" -lt "$deadline" ]; do
    curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# unpack IMAGE DIR: the image's root filesystem in DIR.
unpack() {
  local id
  id="$(podman create "$1")" || return 1
  mkdir -p "$2"
  podman export "$id" | tar -x -C "$2"
  podman rm "$id" >/dev/null
}

# in_image ROOTFS IMAGE ARGS...: the image's entrypoint with ARGS, under
# chroot as the image's user, with only the image's environment (plus what
# the caller put in EXTRA_ENV).
in_image() {
  local rootfs="$1" image="$2"; shift 2
  local user entry env_lines=()
  user="$(podman image inspect --format '{{.Config.User}}' "$image")"
  entry="$(podman image inspect --format '{{index .Config.Entrypoint 0}}' "$image")"
  mapfile -t env_lines < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d')
  env -i "${env_lines[@]}" ${EXTRA_ENV:-} chroot --userspec="$user" "$rootfs" "$entry" "$@"
}

for name in rallypoint-relay rallypoint-collector rallypoint-dashboard rallypoint rallypoint-web; do
  image="$registry/$name:$tag"
  podman image exists "$image" || die "$image is not built: run scripts/images.sh"
  rootfs="$work/$name"
  unpack "$image" "$rootfs" || die "cannot unpack $image"
  user="$(podman image inspect --format '{{.Config.User}}' "$image")"
  [ "$user" = 65532:65532 ] && ok "$name runs as $user" || bad "$name runs as '$user', not the chart's 65532:65532"
  for label in version revision source; do
    value="$(podman image inspect --format "{{index .Labels \"org.opencontainers.image.$label\"}}" "$image")"
    [ -n "$value" ] && [ "$value" != "<no value>" ] || bad "$name has no org.opencontainers.image.$label label"
  done
  [ -s "$rootfs/etc/ssl/certs/ca-certificates.crt" ] && ok "$name has the CA bundle" || bad "$name has no /etc/ssl/certs/ca-certificates.crt"
  [ ! -e "$rootfs/bin/sh" ] || bad "$name has a shell"
  out="$(in_image "$rootfs" "$image" --version 2>&1)" && [[ "$out" == *" $tag" ]] \
    && ok "$name --version: $out" || bad "$name --version: ${out:-no output} (want ... $tag)"
  in_image "$rootfs" "$image" --help >/dev/null 2>&1 && ok "$name --help" || bad "$name --help failed"
done

# --- relay against a real NATS ---------------------------------------------
nats_port="$(free_port)"
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats-js" >"$work/nats.log" 2>&1 &
nats_pid=$!; pids+=("$nats_pid")
deadline=$(( $(date +%s) + 15 ))
until (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] && kill -0 "$nats_pid" 2>/dev/null \
    || die "nats-server did not listen on 127.0.0.1:$nats_port within 15 s: $(tail -5 "$work/nats.log")"
  sleep 0.2
done
image="$registry/rallypoint-relay:$tag"
admin="$(free_port)"
EXTRA_ENV="RALLYPOINT_JWT_SECRET=images-smoke-secret-at-least-32-bytes-long RUST_LOG=info" \
  in_image "$work/rallypoint-relay" "$image" --region smoke --relay-id smoke-ws-0 --transports ws \
  --nats-urls "nats://127.0.0.1:$nats_port" --admin-listen "127.0.0.1:$admin" \
  --http-listen "127.0.0.1:$(free_port)" --wt-listen "127.0.0.1:$(free_port)" >"$work/relay.log" 2>&1 &
relay_pid=$!; pids+=("$relay_pid")
if wait_http "http://127.0.0.1:$admin/healthz" 30 "$relay_pid"; then
  ok "rallypoint-relay answers /healthz (NATS at 127.0.0.1:$nats_port)"
  if wait_http "http://127.0.0.1:$admin/readyz" 30 "$relay_pid"; then ok "rallypoint-relay is ready (/readyz)"
  else bad "rallypoint-relay /readyz not 200 within 30 s: $(curl -sS --max-time 2 "http://127.0.0.1:$admin/readyz" 2>&1 | head -3)"; fi
else
  bad "rallypoint-relay did not answer /healthz within 30 s; its log: $(tail -20 "$work/relay.log")"
fi
stop "$relay_pid"

# --- collector: alive at once, not ready until ClickHouse and setup are there --
image="$registry/rallypoint-collector:$tag"
port="$(free_port)"
EXTRA_ENV="RUST_LOG=info" \
  in_image "$work/rallypoint-collector" "$image" --nats-urls "nats://127.0.0.1:$nats_port" \
  --clickhouse-url "http://127.0.0.1:$(free_port)" \
  --http-listen "127.0.0.1:$port" >"$work/collector.log" 2>&1 &
collector_pid=$!; pids+=("$collector_pid")
if wait_http "http://127.0.0.1:$port/healthz" 30 "$collector_pid"; then
  ok "rallypoint-collector answers /healthz (NATS at 127.0.0.1:$nats_port, no ClickHouse)"
  readyz="$(curl -sS --max-time 2 -w ' %{http_code}' "http://127.0.0.1:$port/readyz" 2>&1)"
  [[ "$readyz" == starting*503 ]] && ok "rallypoint-collector says it is starting (/readyz 503)" \
    || bad "rallypoint-collector /readyz: ${readyz:-no answer} (want 503, starting)"
else
  bad "rallypoint-collector did not answer /healthz within 30 s; its log: $(tail -20 "$work/collector.log")"
fi
stop "$collector_pid"

# --- dashboard --------------------------------------------------------------
image="$registry/rallypoint-dashboard:$tag"
port="$(free_port)"
in_image "$work/rallypoint-dashboard" "$image" --no-auth --listen "127.0.0.1:$port" \
  --clickhouse-url "http://127.0.0.1:$(free_port)" >"$work/dashboard.log" 2>&1 &
dash_pid=$!; pids+=("$dash_pid")
wait_http "http://127.0.0.1:$port/healthz" 30 "$dash_pid" && ok "rallypoint-dashboard answers /healthz" \
  || bad "rallypoint-dashboard did not answer /healthz within 30 s; its log: $(tail -20 "$work/dashboard.log")"
stop "$dash_pid"

# --- web ----------------------------------------------------------------------
image="$registry/rallypoint-web:$tag"
rootfs="$work/rallypoint-web"
candidates="$(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed -n 's/^RALLYPOINT_STATIC_CANDIDATES=//p')"
[ -n "$candidates" ] || die "the web image sets no RALLYPOINT_STATIC_CANDIDATES"
mkdir -p "$rootfs$(dirname "$candidates")"
cat >"$rootfs$candidates" <<'EOF'
{"candidates":[{"region":"smoke","relay_id":"rallypoint-smoke-relay-ws","transport":"websocket","url":"wss://relay.example.invalid/ws"}]}
EOF
port="$(free_port)"
EXTRA_ENV="RALLYPOINT_STATIC_LISTEN=127.0.0.1:$port" in_image "$rootfs" "$image" >"$work/web.log" 2>&1 &
web_pid=$!; pids+=("$web_pid")
if wait_http "http://127.0.0.1:$port/healthz" 30 "$web_pid"; then
  ok "rallypoint-web answers /healthz"
  curl -fsS --max-time 5 "http://127.0.0.1:$port/" | grep -q '\.wasm' && ok "rallypoint-web serves the app's index.html" \
    || bad "rallypoint-web / is not the trunk index.html"
  curl -fsS --max-time 5 "http://127.0.0.1:$port/candidates.json" | grep -q rallypoint-smoke-relay-ws \
    && ok "rallypoint-web serves the mounted candidates.json" || bad "rallypoint-web /candidates.json is not the mounted file"
else
  bad "rallypoint-web did not answer /healthz within 30 s; its log: $(tail -20 "$work/web.log")"
fi
stop "$web_pid"

echo "images-smoke: $passed passed, $failures failed"
[ "$failures" = 0 ]
