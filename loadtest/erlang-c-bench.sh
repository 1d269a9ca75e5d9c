#!/usr/bin/env bash
# The Erlang C reference through the real platform: builds release binaries, starts
# sessions, routing and reporting on loopback against the local stack (own topic prefix
# and ports), runs a scenario with `centralita-loadtest simulate`, and stops the services.
# Results: loadtest/BENCHMARKS.md.
#   loadtest/erlang-c-bench.sh [--scenario loadtest/scenarios/erlang-c-long.yaml] [--json out.json]
# shellcheck source=loadtest/bench-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-lib.sh"
cargo build --release --locked -q -p centralita-sessions -p centralita-routing -p centralita-reporting -p centralita-loadtest
bench_start routing 50171 9171
bench_start sessions 50172 9172
bench_start reporting 50176 9176
args=("$@")
case " $* " in *" --scenario "*) ;; *) args=(--scenario "$repo_root/loadtest/scenarios/erlang-c-long.yaml" "${args[@]}") ;; esac
"$bin/centralita-loadtest" simulate --sessions http://127.0.0.1:50172 --reporting http://127.0.0.1:50176 \
  --progress-seconds 60 "${args[@]}"
