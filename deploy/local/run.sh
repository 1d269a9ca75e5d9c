#!/usr/bin/env bash
# The one command that runs the platform locally: installs what is missing, starts Redis,
# PostgreSQL and tansu on loopback, builds and starts every service, onboards the demo
# tenant with the admin CLI and shows every service SERVING with the tenant visible; it ends
# by printing the web console's address (services/console, served by centralita-console).
# Stop everything with: deploy/local/run.sh stop
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
export CENTRALITA_JWT_PRIVATE_KEY_FILE="${CENTRALITA_JWT_PRIVATE_KEY_FILE:-$repo_root/deploy/local/dev-keys/jwt-ed25519.key}"

if [ "${1:-}" = stop ]; then
  "$here/services.sh" stop
  "$here/stack.sh" down
  exit 0
fi

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
echo "Console: $("$here/services.sh" console-url)  (development sign-in: tenant acme, role Supervisor for the wallboard)" >&2
