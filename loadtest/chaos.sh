#!/usr/bin/env bash
# A chaos run: the services started by deploy/local/services.sh under a run name, ports and
# topic prefix of their own; the load simulator's chaos floor (loadtest/scenarios/chaos.yaml)
# at a steady rate while every N seconds one of sessions, routing, reporting, crm is killed
# with SIGKILL and restarted (`services.sh restart <service>`); the verdict (every contact
# terminal exactly once on the contacts topic and by sessions' API, none accepted twice, no
# agent above capacity, reporting's totals equal the simulator's); the services stopped.
#   loadtest/chaos.sh [real seconds of arrivals, 180] [seconds between kills, 20]
# Env: CENTRALITA_RUN_NAME (chaos), CENTRALITA_GRPC_BASE (29451), CENTRALITA_ADMIN_BASE
# (10651), CHAOS_SERVICES (sessions,routing,reporting,crm), CHAOS_DOWN_SECONDS (1),
# CHAOS_JSON (where the result goes), CHAOS_SEED, CENTRALITA_PROFILE (debug|release),
# CHAOS_BROKER_RESTART_AT (seconds: the first kill from then on is the broker's, once),
# CHAOS_REPLICAS (e.g. "sessions routing": a second replica of each runs beside the first,
# see services.sh CENTRALITA_REPLICAS; name `sessions-2` in CHAOS_SERVICES to kill it too).
# Redis and PostgreSQL of the local stack (deploy/local/stack.sh up) must be running; the
# broker is one of the run's own (tansu on CHAOS_BROKER_PORT: the gRPC base + 48), so a
# chaos run neither depends on nor disturbs the stack's broker. Its storage is memory, or,
# with CHAOS_BROKER_RESTART_AT, PostgreSQL in a schema of its own of the stack's broker
# database `tansu` (dropped at the end), so the restart loses nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/../deploy/local/env.sh"
cd "$repo_root"
seconds="${1:-180}"
every="${2:-20}"
export CENTRALITA_RUN_NAME="${CENTRALITA_RUN_NAME:-chaos}"
export CENTRALITA_GRPC_BASE="${CENTRALITA_GRPC_BASE:-29451}"
export CENTRALITA_ADMIN_BASE="${CENTRALITA_ADMIN_BASE:-10651}"
export CENTRALITA_KAFKA_TOPIC_PREFIX="${CENTRALITA_KAFKA_TOPIC_PREFIX:-$CENTRALITA_RUN_NAME-$(date +%s).}"
export CENTRALITA_E2E_LOGS="${CENTRALITA_E2E_LOGS:-$CENTRALITA_DATA/logs/$CENTRALITA_RUN_NAME}"
export CENTRALITA_JWT_PRIVATE_KEY_FILE="${CENTRALITA_JWT_PRIVATE_KEY_FILE:-$repo_root/deploy/local/dev-keys/jwt-ed25519.key}"
# The services' logs at warn (a long run at info fills the disk), unless set.
export CENTRALITA_LOG="${CENTRALITA_LOG:-warn}"
services="$repo_root/deploy/local/services.sh"
export CENTRALITA_REPLICAS="${CHAOS_REPLICAS:-${CENTRALITA_REPLICAS:-}}"
json="${CHAOS_JSON:-$CENTRALITA_DATA/chaos-$CENTRALITA_RUN_NAME-$(date +%s).json}"

export CHAOS_BROKER_PORT="${CHAOS_BROKER_PORT:-$((CENTRALITA_GRPC_BASE + 48))}"
export CENTRALITA_KAFKA_BROKERS="127.0.0.1:$CHAOS_BROKER_PORT"
mkdir -p "$CENTRALITA_E2E_LOGS"
pid_dir="$CENTRALITA_DATA/run/$CENTRALITA_RUN_NAME"
broker_db="postgres://tansu:tansu@127.0.0.1:$CENTRALITA_PG_PORT/tansu"
schema=""
if [ -n "${CHAOS_BROKER_RESTART_AT:-}" ]; then
  schema="chaos_$(date +%s)_$$"
  psql "$broker_db" -qAt -v ON_ERROR_STOP=1 -c "create schema $schema" \
    -c "set search_path = $schema" -c "set client_min_messages = warning" -f "$repo_root/deploy/local/tansu-postgres.sql" >/dev/null
  export CHAOS_BROKER_STORAGE="$broker_db?sslmode=disable&options=-csearch_path%3D$schema"
else
  export CHAOS_BROKER_STORAGE="memory://tansu/"
fi
stop() {
  "$services" stop || true
  if [ -f "$pid_dir/broker.pid" ]; then
    local pid; pid="$(cat "$pid_dir/broker.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pid_dir/broker.pid"
  fi
  if [ -n "$schema" ]; then psql "$broker_db" -qAt -c "drop schema $schema cascade" >/dev/null 2>&1 || true; fi
}
trap stop EXIT
"$here/chaos-restart.sh" broker
"$services" start
admin="$CENTRALITA_ADMIN_BASE"
ready_ports=(0 1 2 3 4 5)
for r in ${CENTRALITA_REPLICAS:-}; do
  case "$r" in sessions) ready_ports+=(10) ;; routing) ready_ports+=(11) ;; crm) ready_ports+=(13) ;; reporting) ready_ports+=(15) ;; esac
done
for i in "${ready_ports[@]}"; do
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$((admin + i))/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$((admin + i))/readyz" >/dev/null || { echo "[chaos] service $i not ready" >&2; exit 1; }
done
grpc="$CENTRALITA_GRPC_BASE"
echo "[chaos] services ready (run $CENTRALITA_RUN_NAME, prefix $CENTRALITA_KAFKA_TOPIC_PREFIX); $seconds s of arrivals, a kill every $every s" >&2
"$CARGO_TARGET_DIR/${CENTRALITA_PROFILE:-debug}/centralita-loadtest" simulate \
  --scenario "$here/scenarios/chaos.yaml" --real-seconds "$seconds" ${CHAOS_SEED:+--seed "$CHAOS_SEED"} \
  --brokers "$CENTRALITA_KAFKA_BROKERS" --sessions "http://127.0.0.1:$grpc" --reporting "http://127.0.0.1:$((grpc + 5))" \
  --crm "http://127.0.0.1:$((grpc + 3))" \
  --chaos-every "$every" --chaos-services "${CHAOS_SERVICES:-sessions,routing,reporting,crm}" \
  --chaos-down-seconds "${CHAOS_DOWN_SECONDS:-1}" \
  --chaos-pid-dir "$CENTRALITA_DATA/run/$CENTRALITA_RUN_NAME" \
  --chaos-restart "'$here/chaos-restart.sh' {service}" ${CHAOS_BROKER_RESTART_AT:+--chaos-broker-at "$CHAOS_BROKER_RESTART_AT"} \
  --json "$json" --progress-seconds 10
echo "[chaos] result in $json" >&2
