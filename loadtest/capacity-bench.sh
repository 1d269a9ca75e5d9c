#!/usr/bin/env bash
# The platform next to its parts, in one run on this machine: Redis (redis-benchmark), the
# Kafka-protocol broker (produce and consume rate with the platform's client settings), and
# the full pipeline's knee (the ramp scenario through sessions, routing and reporting).
# Results: loadtest/BENCHMARKS.md.
#   loadtest/capacity-bench.sh [--json-dir DIR]
# shellcheck source=loadtest/bench-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-lib.sh"
out="${1:-$run}"
[ "${1:-}" = "--json-dir" ] && out="$2"
mkdir -p "$out"
cargo build --release --locked -q -p centralita-sessions -p centralita-routing -p centralita-reporting -p centralita-loadtest

echo "== redis-benchmark (127.0.0.1:$CENTRALITA_REDIS_PORT, 50 clients, 100k requests)" >&2
redis-benchmark -h 127.0.0.1 -p "$CENTRALITA_REDIS_PORT" -q -n 100000 -c 50 -t set,get,incr,zadd,lpush,eval 2>/dev/null | tee "$out/redis.txt" >&2 || true
echo "== redis-benchmark pipelined (-P 16)" >&2
redis-benchmark -h 127.0.0.1 -p "$CENTRALITA_REDIS_PORT" -q -n 400000 -c 50 -P 16 -t set,get 2>/dev/null | tee "$out/redis-pipelined.txt" >&2 || true

echo "== kafka raw (tansu on 127.0.0.1:9092)" >&2
"$bin/centralita-loadtest" kafka --messages 100000 --bytes 300 --partitions 3 >"$out/kafka.json"

echo "== full pipeline ramp (sessions, routing, reporting)" >&2
bench_start routing 50161 9161
bench_start sessions 50162 9162
bench_start reporting 50166 9166
"$bin/centralita-loadtest" simulate --scenario "$repo_root/loadtest/scenarios/ramp.yaml" \
  --sessions http://127.0.0.1:50162 --reporting http://127.0.0.1:50166 --json "$out/ramp.json" --progress-seconds 10
echo "[bench] results in $out" >&2
