#!/usr/bin/env bash
# The wallboard at floor size (issue 20): 50 queues and 2,000 agents by default, the
# supervisor's wallboard open in Chromium, contacts created one at a time; how long until the
# change is visible through reporting's API and on the screen. Results: loadtest/BENCHMARKS.md.
#   loadtest/wallboard-bench.sh [--queues N] [--agents N] [--rounds N]
# shellcheck source=loadtest/bench-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-lib.sh"
cargo build --release --locked -q -p centralita-sessions -p centralita-routing -p centralita-reporting \
  -p centralita-console -p centralita-cli
app="$repo_root/services/console"
(cd "$app" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error && npm run build --silent) >&2
export CENTRALITA_GRPC_WEB_ORIGINS="http://127.0.0.1:9179"
bench_start routing 50171 9171
bench_start sessions 50172 9172
bench_start reporting 50176 9176
export CENTRALITA_ENDPOINTS="sessions=127.0.0.1:50172,routing=127.0.0.1:50171,reporting=127.0.0.1:50176"
console_port=9179
CENTRALITA_CONSOLE_ADDR="127.0.0.1:$console_port" CENTRALITA_CONSOLE_ADMIN_ADDR="127.0.0.1:$((console_port + 1))" \
  CENTRALITA_CONSOLE_DIST="$app/dist" CENTRALITA_CONSOLE_DEV_SIGN_IN=true \
  CENTRALITA_CONSOLE_ENDPOINTS="sessions=http://127.0.0.1:50172,reporting=http://127.0.0.1:50176,crm=http://127.0.0.1:50174" \
  "$bin/centralita-console" >"$run/console.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$((console_port + 1))/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$((console_port + 1))/readyz" >/dev/null 2>&1 ||
  { echo "the console did not get ready; see $run/console.log" >&2; tail -3 "$run/console.log" >&2; exit 1; }
export CENTRALITA_CONSOLE_URL="http://127.0.0.1:$console_port" CENTRALITA_PROFILE=release
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$CENTRALITA_VENV/bin/python" "$repo_root/loadtest/wallboard_bench.py" --json "$run/wallboard.json" \
  --screenshot "$run/wallboard.png" "$@"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "[bench] results in $run" >&2
