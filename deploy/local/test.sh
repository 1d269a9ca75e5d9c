#!/usr/bin/env bash
# The one command that runs the whole test suite: installs what is missing, brings the local
# stack up (Redis, PostgreSQL, tansu on loopback), runs every Rust test (unit, property and
# integration against the real stack), then starts the service binaries under their own
# topic prefix and ports and runs the end-to-end tests with independent clients.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
cd "$repo_root"

"$here/stack.sh" up

echo "== buf lint (proto/)" >&2
(cd proto && "$BUF_BIN" lint)

echo "== chart (helm engine render + lint, kubernetes schemas)" >&2
"$CENTRALITA_VENV/bin/python" -m pytest -q -p no:cacheprovider "$repo_root/charts/tests"

echo "== cargo test (workspace)" >&2
cargo test --workspace --all-targets --locked

echo "== fuzz (coverage-guided, ${FUZZ_SECONDS:-10} s per target; fuzz/README.md)" >&2
"$repo_root/fuzz/run.sh" "${FUZZ_SECONDS:-10}"

echo "== console unit tests (vitest; npm ci offline from the lock file once cached)" >&2
(cd services/console && npm ci --prefer-offline --no-audit --no-fund --loglevel=error && npm test --silent)

echo "== end-to-end (service binaries, grpcio, kafka-python, the CLI)" >&2
export CENTRALITA_RUN_NAME=e2e
export CENTRALITA_KAFKA_TOPIC_PREFIX="e2e-$(date +%s)-$$."
# Below the kernel's ephemeral range (32768-60999): a port in it can be taken at any moment
# by an outgoing connection's local end, and the service then fails to bind.
export CENTRALITA_GRPC_BASE=31051 CENTRALITA_ADMIN_BASE=9201
export CENTRALITA_JWT_PRIVATE_KEY_FILE="$repo_root/deploy/local/dev-keys/jwt-ed25519.key"
export CENTRALITA_E2E_LOGS="$CENTRALITA_DATA/logs/e2e"
rm -rf "$CENTRALITA_E2E_LOGS"
trap '"$here/services.sh" stop' EXIT
"$here/services.sh" start
CENTRALITA_ENDPOINTS="$("$here/services.sh" endpoints)"
export CENTRALITA_ENDPOINTS TANSU_BIN
cli="$CARGO_TARGET_DIR/debug/centralita"
"$cli" admin tenant apply -f "$repo_root/deploy/examples/tenants/acme.yaml" >/dev/null
"$cli" status --wait 90s --expect-tenant acme >/dev/null
"$CENTRALITA_VENV/bin/python" -m pytest -q -p no:cacheprovider "$here/e2e"
