#!/usr/bin/env bash
# The reporting benchmark: event→visible latency and event throughput of the real service
# against the local stack's broker and PostgreSQL. Results: loadtest/BENCHMARKS.md.
#   loadtest/reporting-bench.sh --probes 200 --contacts 5000 [--json out.json]
# shellcheck source=loadtest/bench-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-lib.sh"
cargo build --release --locked -q -p centralita-reporting -p centralita-loadtest
bench_start reporting 50166 9166
"$bin/centralita-loadtest" reporting --reporting http://127.0.0.1:50166 "$@"
