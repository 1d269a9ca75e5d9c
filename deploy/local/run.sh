#!/usr/bin/env bash
# The one command that runs the platform locally: installs what is missing, starts Redis,
# PostgreSQL and tansu on loopback, builds and starts every service, onboards the demo
# tenant with the admin CLI and shows every service SERVING with the tenant visible; it ends
# by starting a gentle demo floor (loadtest/scenarios/demo.yaml: simulated customers and
# agents through the public APIs, on a tenant of its own) and printing the web console's
# address (services/console, served by centralita-console).
# Stop everything with: deploy/local/run.sh stop
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
export CENTRALITA_JWT_PRIVATE_KEY_FILE="${CENTRALITA_JWT_PRIVATE_KEY_FILE:-$repo_root/deploy/local/dev-keys/jwt-ed25519.key}"

run_dir="$CENTRALITA_DATA/run/${CENTRALITA_RUN_NAME:-dev}"
demo_pid="$run_dir/demo.pid"
demo_log="$CENTRALITA_DATA/logs/${CENTRALITA_RUN_NAME:-dev}/demo.log"

if [ "${1:-}" = stop ]; then
  if [ -f "$demo_pid" ]; then kill -TERM "$(cat "$demo_pid")" 2>/dev/null || true; rm -f "$demo_pid"; fi
  "$here/services.sh" stop
  "$here/stack.sh" down
  exit 0
fi

# The platform run by hand keeps its event log in PostgreSQL: tenants, contacts and events
# outlive a broker or stack restart. (The test suite's stack keeps the faster memory
# storage: loadtest/BENCHMARKS.md, "Durable broker storage".) A broker already running on
# the other storage is left as it is, with a warning.
export CENTRALITA_BROKER_STORAGE="${CENTRALITA_BROKER_STORAGE:-postgres}"
"$here/stack.sh" up
"$here/services.sh" start
cli="$CARGO_TARGET_DIR/debug/centralita"
echo "== onboarding the demo tenant" >&2
"$cli" admin tenant apply -f "$repo_root/deploy/examples/tenants/acme.yaml"
"$cli" admin tenant list
echo "== every service, its gRPC health and the tenants it sees" >&2
"$cli" status --endpoints "$("$here/services.sh" endpoints)" --wait 60s --expect-tenant acme
cat >&2 <<MSG

Centralita is running on loopback. Try:
  $cli token mint --tenant acme --role supervisor --subject sam
  $cli admin tenant suspend acme && $cli status --endpoints "\$($here/services.sh endpoints)"
  curl -s http://127.0.0.1:9101/readyz ; curl -s http://127.0.0.1:9101/metrics | head
Logs: $CENTRALITA_DATA/logs/dev/   Stop: deploy/local/run.sh stop
MSG

# The demo floor: its own tenant (demo-<run id>), arrivals about 4 a minute, for 8 hours or
# until `run.sh stop`.
endpoint() { "$here/services.sh" endpoints | tr ',' '\n' | sed -n "s/^$1=//p"; }
mkdir -p "$run_dir" "$(dirname "$demo_log")"
if ! { [ -f "$demo_pid" ] && kill -0 "$(cat "$demo_pid")" 2>/dev/null; }; then
  nohup "$CARGO_TARGET_DIR/debug/centralita-loadtest" simulate --scenario "$repo_root/loadtest/scenarios/demo.yaml" \
    --sessions "http://$(endpoint sessions)" --reporting "http://$(endpoint reporting)" --progress-seconds 60 \
    >"$demo_log" 2>&1 &
  echo $! >"$demo_pid"
fi
for _ in $(seq 1 60); do grep -q "agents signed in" "$demo_log" 2>/dev/null && break; sleep 0.5; done
demo_run="$(sed -n 's/.*, run \([0-9a-f]*\)$/\1/p' "$demo_log" | head -1)"
echo "Demo floor: tenant demo-$demo_run (log $demo_log)" >&2
# A seat on the demo floor for the newcomer: an agent of their own on its support queue (the
# simulated customers' voice contacts: no audio, the call controls act on the contact), who
# takes contacts beside the simulated ones once they go available in the console.
if [ -n "$demo_run" ]; then
  "$cli" admin agent upsert --id "you-$demo_run" --display-name "You" \
    --queue "demo-$demo_run/support" --capacity voice=1 \
    --language es --language en --endpoints "$("$here/services.sh" endpoints)" >&2 || true
fi
echo "Console: $("$here/services.sh" console-url)  (development sign-in)" >&2
echo "  Supervisor: tenant demo-$demo_run for a live wallboard (or acme)" >&2
echo "  Agent: tenant demo-$demo_run, agent id you-$demo_run; go available and take a contact" >&2
echo "  BPO admin: no tenant; every tenant's usage and the shared agent pool" >&2
