#!/usr/bin/env bash
# The CRM benchmark: profile lookups per second and screen-pop latency of the real service
# against the local stack's PostgreSQL and broker. Results: loadtest/BENCHMARKS.md.
#   loadtest/crm-bench.sh --customers 10000 --held 500 --workers 16 --seconds 15 [--json out.json]
# shellcheck source=loadtest/bench-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-lib.sh"
cargo build --release --locked -q -p centralita-crm -p centralita-loadtest
bench_start crm 50154 9154
"$bin/centralita-loadtest" crm --crm http://127.0.0.1:50154 "$@"
