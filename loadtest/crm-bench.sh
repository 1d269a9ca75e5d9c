#!/usr/bin/env bash
# The CRM benchmark: profile lookups per second, screen-pop latency and resolution of
# customers from sessions' contacts, of the real services (CRM and sessions) against the
# local stack's PostgreSQL, Redis and broker. Results: loadtest/BENCHMARKS.md.
#   loadtest/crm-bench.sh --customers 10000 --held 500 --workers 16 --seconds 15 [--json out.json]
# shellcheck source=loadtest/bench-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-lib.sh"
cargo build --release --locked -q -p centralita-crm -p centralita-sessions -p centralita-loadtest
bench_start sessions 50151 9151
# The CRM reads contacts' identities from this sessions (events carry none since issue 23).
CENTRALITA_SESSIONS_ENDPOINT=http://127.0.0.1:50151 bench_start crm 50154 9154
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "== the machine's limit: PostgreSQL's own select-only rate (pgbench -S, 16 clients, 10 s)" >&2
pg="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
export PGPASSWORD=centralita
"$pg/pgbench" -h 127.0.0.1 -p "$CENTRALITA_PG_PORT" -U centralita -i -s 10 -q centralita_test >/dev/null 2>&1
"$pg/pgbench" -h 127.0.0.1 -p "$CENTRALITA_PG_PORT" -U centralita -S -c 16 -j 2 -T 10 centralita_test 2>/dev/null \
  | grep -E "^(tps|latency average)" >&2
"$pg/psql" -h 127.0.0.1 -p "$CENTRALITA_PG_PORT" -U centralita -d centralita_test -qc \
  "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers" >&2
echo "== the CRM" >&2
"$bin/centralita-loadtest" crm --crm http://127.0.0.1:50154 --sessions http://127.0.0.1:50151 "$@"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
