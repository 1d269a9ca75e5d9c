#!/usr/bin/env bash
# Builds and runs every Centralita service on loopback against the local stack.
#   deploy/local/services.sh start | stop | status
# Logs: $CENTRALITA_DATA/logs/<run name>/<service>.log (JSON lines). gRPC ports 50051-50056,
# admin ports 9101-9106 (override the base with CENTRALITA_GRPC_BASE / CENTRALITA_ADMIN_BASE).
# CENTRALITA_PROFILE=release runs release binaries (build them first: cargo build --release).
# media's SIP front door (UDP and TCP) listens on 127.0.0.1:$CENTRALITA_SIP_PORT, by default
# 5060 plus the admin base's offset from 9101 (5060 for the dev run, 5160 for test.sh's e2e).
# Its RTP ports (CENTRALITA_RTP_PORTS) are 1000 per run below the kernel's ephemeral range:
# 20000-20999 for the dev run, 21000-21999 for the e2e run, 22000-22999 for admin base 9301.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"

SERVICES=(sessions routing media crm recording reporting)
grpc_base="${CENTRALITA_GRPC_BASE:-50051}"
admin_base="${CENTRALITA_ADMIN_BASE:-9101}"
sip_port="${CENTRALITA_SIP_PORT:-$((5060 + admin_base - 9101))}"
rtp_first=$((20000 + (admin_base - 9101) * 10))
rtp_ports="${CENTRALITA_RTP_PORTS:-$rtp_first-$((rtp_first + 999))}"
bin="$CARGO_TARGET_DIR/${CENTRALITA_PROFILE:-debug}"
export CENTRALITA_JWT_PUBLIC_KEY_FILE="${CENTRALITA_JWT_PUBLIC_KEY_FILE:-$repo_root/deploy/local/dev-keys/jwt-ed25519.pub}"
export CENTRALITA_JWT_PRIVATE_KEY_FILE="${CENTRALITA_JWT_PRIVATE_KEY_FILE:-$repo_root/deploy/local/dev-keys/jwt-ed25519.key}"
# A second set of services (the end-to-end tests) runs beside the dev one under its own name.
name="${CENTRALITA_RUN_NAME:-dev}"
logs="$CENTRALITA_DATA/logs/$name"
run="$CENTRALITA_DATA/run/$name"
mkdir -p "$logs" "$run"

endpoints() {
  local i=0 out=()
  for s in "${SERVICES[@]}"; do out+=("$s=127.0.0.1:$((grpc_base + i))"); i=$((i + 1)); done
  (IFS=,; echo "${out[*]}")
}

start() {
  (cd "$repo_root" && cargo build --workspace --bins -q)
  local i=0
  for s in "${SERVICES[@]}"; do
    local pidf="$run/$s.pid"
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then i=$((i + 1)); continue; fi
    # media reaches sessions (the first service) and takes its SIP port; others ignore these.
    CENTRALITA_GRPC_ADDR="127.0.0.1:$((grpc_base + i))" CENTRALITA_ADMIN_ADDR="127.0.0.1:$((admin_base + i))" \
      CENTRALITA_SESSIONS_ENDPOINT="http://127.0.0.1:$grpc_base" CENTRALITA_SIP_ADDR="127.0.0.1:$sip_port" CENTRALITA_RTP_PORTS="$rtp_ports" \
      CENTRALITA_KAFKA_GROUP_INSTANCE_ID="$name-$s" nohup "$bin/centralita-$s" >>"$logs/$s.log" 2>&1 &
    echo $! >"$pidf"
    echo "[services] $s grpc 127.0.0.1:$((grpc_base + i)) admin http://127.0.0.1:$((admin_base + i))" >&2
    i=$((i + 1))
  done
}

stop() {
  for s in "${SERVICES[@]}"; do
    local pidf="$run/$s.pid"
    [ -f "$pidf" ] || continue
    local pid; pid="$(cat "$pidf")"
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
  done
  echo "[services] stopped" >&2
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) "$bin/centralita" status --endpoints "$(endpoints)" ;;
  endpoints) endpoints ;;
  *) echo "usage: $0 start|stop|status|endpoints" >&2; exit 2 ;;
esac
