#!/usr/bin/env bash
# Starts one of a chaos run's processes again; loadtest/chaos.sh hands it to the simulator
# as its restart command (`--chaos-restart`) and starts the run's broker with it.
#   loadtest/chaos-restart.sh broker      # the run's tansu on $CHAOS_BROKER_STORAGE, port
#                                         # $CHAOS_BROKER_PORT; its pid in the run's pid dir
#   loadtest/chaos-restart.sh <service>   # deploy/local/services.sh restart <service>
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/../deploy/local/env.sh"
what="${1:?usage: $0 broker|<service>}"
if [ "$what" != broker ]; then
  exec "$repo_root/deploy/local/services.sh" restart "$what"
fi
: "${CHAOS_BROKER_PORT:?}" "${CHAOS_BROKER_STORAGE:?}" "${CENTRALITA_RUN_NAME:?}" "${CENTRALITA_E2E_LOGS:?}"
pid_dir="$CENTRALITA_DATA/run/$CENTRALITA_RUN_NAME"
mkdir -p "$pid_dir"
env -u OTEL_EXPORTER_OTLP_ENDPOINT setsid "$TANSU_BIN" broker \
  --listener-url "tcp://127.0.0.1:$CHAOS_BROKER_PORT" --advertised-listener-url "tcp://127.0.0.1:$CHAOS_BROKER_PORT" \
  --storage-engine "$CHAOS_BROKER_STORAGE" >>"$CENTRALITA_E2E_LOGS/tansu.log" 2>&1 </dev/null &
echo $! >"$pid_dir/broker.pid"
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$CHAOS_BROKER_PORT") 2>/dev/null && exit 0; sleep 0.1; done
echo "[chaos] the run's broker did not listen on $CHAOS_BROKER_PORT" >&2
exit 1
