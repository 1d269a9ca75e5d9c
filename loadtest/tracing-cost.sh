#!/usr/bin/env bash
# The cost of tracing on the ACD benchmark: the same acd-bench run with spans off
# (CENTRALITA_TRACE=off), with spans kept but not exported (the default, no collector), and
# exported over OTLP (traces and metrics) to loadtest/otlp-sink.py on loopback. Each
# variant's acd-bench JSON goes to <out>-<variant>.json; the sink's counts to
# <out>-exported-sink.json. Arguments after the output prefix go to acd-bench.sh.
#   loadtest/tracing-cost.sh /tmp/tracing --tenants 50 --agents 2000 --rates 50,100,200 --step-seconds 15
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
shift
# shellcheck source=deploy/local/env.sh
source "$here/../deploy/local/env.sh"
port="${CENTRALITA_BENCH_OTLP_PORT:-54317}"
for variant in ${CENTRALITA_BENCH_VARIANTS:-off kept exported}; do
  echo "[tracing-cost] variant $variant" >&2
  case "$variant" in
    off) CENTRALITA_TRACE=off "$here/acd-bench.sh" "$@" --json "$out-off.json" ;;
    kept) CENTRALITA_TRACE=info "$here/acd-bench.sh" "$@" --json "$out-kept.json" ;;
    exported)
      "$CENTRALITA_VENV/bin/python" "$here/otlp-sink.py" "$port" >"$out-exported-sink.json" &
      sink=$!
      trap 'kill -TERM $sink 2>/dev/null || true' EXIT
      sleep 1
      CENTRALITA_TRACE=info OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" OTEL_METRIC_EXPORT_INTERVAL=10000 \
        "$here/acd-bench.sh" "$@" --json "$out-exported.json"
      kill -TERM "$sink"
      wait "$sink" || true
      trap - EXIT
      cat "$out-exported-sink.json" >&2
      ;;
    *) echo "unknown variant $variant (off, kept, exported)" >&2; exit 2 ;;
  esac
done
