#!/usr/bin/env bash
# The local stack: Redis, PostgreSQL and tansu (Kafka protocol) on loopback, data under
# $CENTRALITA_DATA (default: .local/ in the clone). Safe to re-run.
#   deploy/local/stack.sh up      install what is missing, start what is not running
#   deploy/local/stack.sh down    stop everything
#   deploy/local/stack.sh status  one line per component
#   deploy/local/stack.sh kafka-down | kafka-up   stop/start only the broker (failure tests)
# CENTRALITA_BROKER_STORAGE=postgres|memory: where the broker keeps its log (broker_storage).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"

log() { printf '[stack] %s\n' "$*" >&2; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

wait_port() { # name port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$1 did not open port $2"; return 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

redis_up() {
  if port_open "$CENTRALITA_REDIS_PORT"; then return; fi
  mkdir -p "$CENTRALITA_DATA/redis"
  redis-server --port "$CENTRALITA_REDIS_PORT" --bind 127.0.0.1 --dir "$CENTRALITA_DATA/redis" \
    --daemonize yes --pidfile "$CENTRALITA_DATA/redis/redis.pid" --logfile "$CENTRALITA_DATA/redis/redis.log" \
    --save "" --appendonly no >/dev/null
  wait_port redis "$CENTRALITA_REDIS_PORT"
  log "redis on 127.0.0.1:$CENTRALITA_REDIS_PORT"
}

# PostgreSQL refuses to run as root, so as root it runs as `postgres`, which must reach its
# data directory. When the clone sits under a directory only root can enter, the data goes
# to the postgres user's home instead (one directory per clone).
pg_dir() {
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$CENTRALITA_DATA" 2>/dev/null; then
    echo "/var/lib/postgresql/centralita-$(echo "$repo_root" | md5sum | cut -c1-10)"
  else
    echo "$CENTRALITA_DATA/postgres"
  fi
}

pg_up() {
  local dir bin; dir="$(pg_dir)"; bin="$(pg_bin)"
  if port_open "$CENTRALITA_PG_PORT"; then return; fi
  mkdir -p "$dir/sock"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir" "$dir/sock" && chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg mkdir -p "$dir/data"
    echo postgres >"$dir/pwfile"; [ "$(id -u)" = 0 ] && chown postgres "$dir/pwfile"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$dir/pwfile" -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$dir/pwfile"
  fi
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-p $CENTRALITA_PG_PORT -c listen_addresses=127.0.0.1 -k $dir/sock -c fsync=off -c max_connections=300" start >/dev/null
  # Roles and databases: the services' role is not a superuser, so row-level security binds it.
  as_pg psql -h "$dir/sock" -p "$CENTRALITA_PG_PORT" -U postgres -qAt -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
SELECT 'CREATE ROLE centralita LOGIN PASSWORD ''centralita'''
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'centralita') \gexec
SELECT 'CREATE DATABASE centralita OWNER centralita'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'centralita') \gexec
SELECT 'CREATE DATABASE centralita_test OWNER centralita'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'centralita_test') \gexec
SQL
  log "postgresql on 127.0.0.1:$CENTRALITA_PG_PORT"
}

# The broker's storage: `postgres` keeps the event log (topics, records, consumer groups'
# offsets) in a database of its own, `tansu`, on the stack's PostgreSQL, so a broker restart
# or a stack down/up loses nothing; `memory` keeps it in the broker process (faster, lost
# when the broker stops). The cost of each: loadtest/BENCHMARKS.md ("Durable broker storage").
broker_storage() {
  case "${CENTRALITA_BROKER_STORAGE:-memory}" in
    postgres) echo "postgres://tansu:tansu@127.0.0.1:$CENTRALITA_PG_PORT/tansu?sslmode=disable" ;;
    memory) echo "memory://tansu/" ;;
    *) log "CENTRALITA_BROKER_STORAGE must be postgres or memory, not '$CENTRALITA_BROKER_STORAGE'"; return 1 ;;
  esac
}

# The broker's database: role and database `tansu`, and tansu's schema (which tansu 0.6 does
# not create) from tansu-postgres.sql. Idempotent, and run on every `up` even when PostgreSQL
# was already running, so a stack started before it existed gets it too.
broker_db_up() {
  local dir; dir="$(pg_dir)"
  as_pg psql -h "$dir/sock" -p "$CENTRALITA_PG_PORT" -U postgres -qAt -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
SELECT 'CREATE ROLE tansu LOGIN PASSWORD ''tansu'''
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tansu') \gexec
SELECT 'CREATE DATABASE tansu OWNER tansu'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tansu') \gexec
SQL
  as_pg psql -h "$dir/sock" -p "$CENTRALITA_PG_PORT" -U tansu -d tansu -qAt -v ON_ERROR_STOP=1 \
    -c 'SET client_min_messages = warning' -f "$here/tansu-postgres.sql" >/dev/null
}

kafka_up() {
  local storage; storage="$(broker_storage)"
  if port_open "$CENTRALITA_KAFKA_PORT"; then
    local running; running="$(cat "$CENTRALITA_DATA/tansu/storage" 2>/dev/null || echo memory)"
    [ "$running" = "${storage%%:*}" ] ||
      log "the running broker keeps its log in ${running}, not ${storage%%:*}: stack.sh kafka-down, then kafka-up, to switch"
    return 0
  fi
  mkdir -p "$CENTRALITA_DATA/tansu"
  # Keep the broker's own OTLP export off whatever the caller's shell has set.
  env -u OTEL_EXPORTER_OTLP_ENDPOINT nohup "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$CENTRALITA_KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$CENTRALITA_KAFKA_PORT" \
    --storage-engine "$storage" >>"$CENTRALITA_DATA/tansu/tansu.log" 2>&1 &
  echo $! >"$CENTRALITA_DATA/tansu/tansu.pid"
  echo "${storage%%:*}" >"$CENTRALITA_DATA/tansu/storage"
  wait_port tansu "$CENTRALITA_KAFKA_PORT"
  log "tansu (kafka protocol, ${storage%%:*} storage) on 127.0.0.1:$CENTRALITA_KAFKA_PORT"
}

kafka_down() {
  local pidf="$CENTRALITA_DATA/tansu/tansu.pid"
  if [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null; then
    for _ in $(seq 1 50); do port_open "$CENTRALITA_KAFKA_PORT" || break; sleep 0.1; done
  fi
  rm -f "$pidf"
}

down() {
  kafka_down
  redis-cli -p "$CENTRALITA_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  if [ -f "$(pg_dir)/data/postmaster.pid" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$(pg_dir)/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  log "stopped"
}

status() {
  for c in "redis $CENTRALITA_REDIS_PORT" "postgres $CENTRALITA_PG_PORT" "kafka $CENTRALITA_KAFKA_PORT"; do
    set -- $c
    if ! port_open "$2"; then echo "$1: down"
    elif [ "$1" = kafka ]; then echo "$1: up (127.0.0.1:$2, $(cat "$CENTRALITA_DATA/tansu/storage" 2>/dev/null || echo memory) storage)"
    else echo "$1: up (127.0.0.1:$2)"; fi
  done
}

case "${1:-up}" in
  up) "$here/install.sh"; redis_up; pg_up; broker_db_up; kafka_up ;;
  down) down ;;
  status) status ;;
  kafka-down) kafka_down ;;
  kafka-up) broker_db_up; kafka_up ;;
  *) echo "usage: $0 up|down|status|kafka-down|kafka-up" >&2; exit 2 ;;
esac
