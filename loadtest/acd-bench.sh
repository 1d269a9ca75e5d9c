#!/usr/bin/env bash
# The ACD benchmark: enqueue→offer latency and throughput through the real services.
# Builds release binaries, starts routing and sessions on loopback against the local stack
# (own topic prefix and ports), runs `centralita-loadtest acd` with the given arguments, and
# stops the services. Results: loadtest/BENCHMARKS.md.
#   loadtest/acd-bench.sh --rates 100,200,300,400 --step-seconds 20 [--json out.json]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/../deploy/local/env.sh"
cd "$repo_root"
"$repo_root/deploy/local/stack.sh" up >&2
cargo build --release --locked -q -p centralita-sessions -p centralita-routing -p centralita-loadtest
bin="$CARGO_TARGET_DIR/release"
run="$CENTRALITA_DATA/bench/acd-$(date +%s)"
mkdir -p "$run"
export CENTRALITA_KAFKA_TOPIC_PREFIX="bench-$(date +%s)-$$."
export CENTRALITA_JWT_PUBLIC_KEY_FILE="$repo_root/deploy/local/dev-keys/jwt-ed25519.pub"
export CENTRALITA_JWT_PRIVATE_KEY_FILE="$repo_root/deploy/local/dev-keys/jwt-ed25519.key"
export CENTRALITA_LOG_FILTER="${CENTRALITA_LOG_FILTER:-warn}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
CENTRALITA_GRPC_ADDR=127.0.0.1:50161 CENTRALITA_ADMIN_ADDR=127.0.0.1:9161 \
  "$bin/centralita-routing" >"$run/routing.log" 2>&1 &
pids+=($!)
CENTRALITA_GRPC_ADDR=127.0.0.1:50162 CENTRALITA_ADMIN_ADDR=127.0.0.1:9162 \
  "$bin/centralita-sessions" >"$run/sessions.log" 2>&1 &
pids+=($!)
for port in 9161 9162; do
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { echo "service on admin port $port not ready; logs in $run" >&2; exit 1; }
done
echo "[bench] services ready (logs in $run)" >&2
"$bin/centralita-loadtest" acd --sessions http://127.0.0.1:50162 "$@"
