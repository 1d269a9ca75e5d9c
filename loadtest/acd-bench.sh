#!/usr/bin/env bash
# The ACD benchmark: enqueue→offer latency and throughput through the real services.
# Builds release binaries, starts routing and sessions on loopback against the local stack
# (own topic prefix and ports), runs `centralita-loadtest acd` with the given arguments, and
# stops the services. Results: loadtest/BENCHMARKS.md.
#   loadtest/acd-bench.sh --rates 100,200,300,400 --step-seconds 20 [--json out.json]
# shellcheck source=loadtest/bench-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-lib.sh"
cargo build --release --locked -q -p centralita-sessions -p centralita-routing -p centralita-loadtest
bench_start routing 50161 9161
bench_start sessions 50162 9162
"$bin/centralita-loadtest" acd --sessions http://127.0.0.1:50162 \
  --metrics http://127.0.0.1:9161/metrics,http://127.0.0.1:9162/metrics "$@"
