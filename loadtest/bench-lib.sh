# Shared by the benchmark scripts (sourced): the local stack up, release binaries built,
# services started on loopback under their own topic prefix and stopped on exit.
#   bench_start <name> <service> <grpc-port> <admin-port>   # waits for /readyz
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/../deploy/local/env.sh"
cd "$repo_root"
"$repo_root/deploy/local/stack.sh" up >&2
bin="$CARGO_TARGET_DIR/release"
run="$CENTRALITA_DATA/bench/$(basename "$0" .sh)-$(date +%s)"
mkdir -p "$run"
export CENTRALITA_KAFKA_TOPIC_PREFIX="bench-$(date +%s)-$$."
export CENTRALITA_JWT_PUBLIC_KEY_FILE="$repo_root/deploy/local/dev-keys/jwt-ed25519.pub"
export CENTRALITA_JWT_PRIVATE_KEY_FILE="$repo_root/deploy/local/dev-keys/jwt-ed25519.key"
# Logs at warn (the services' variable is CENTRALITA_LOG; until 2026-12-05 this set an unread
# CENTRALITA_LOG_FILTER, so the benchmarks ran at info). Spans follow CENTRALITA_TRACE
# (default "info": one trace per contact, as deployed); CENTRALITA_TRACE=off measures
# without, OTEL_EXPORTER_OTLP_ENDPOINT with export (see BENCHMARKS.md, the cost of tracing).
export CENTRALITA_LOG="${CENTRALITA_LOG:-warn}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

bench_start() {
  local service="$1" grpc="$2" admin="$3"
  CENTRALITA_GRPC_ADDR="127.0.0.1:$grpc" CENTRALITA_ADMIN_ADDR="127.0.0.1:$admin" \
    "$bin/centralita-$service" >"$run/$service.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null || { echo "$service not ready; logs in $run" >&2; exit 1; }
  echo "[bench] $service ready on 127.0.0.1:$grpc (logs in $run)" >&2
}
