#!/usr/bin/env bash
# The digital channels' benchmark (issue 18): customer message → agent stream latency and
# messages per second through the real web chat front door, ConversationService and
# sessions (media's digital role alone, as the chart deploys it), next to the broker's raw
# rate measured in the same run. Results: loadtest/BENCHMARKS.md.
#   loadtest/chat-bench.sh [--chats 400] [--rates 100,200,400,800] [--seconds 15] [--json out.json]
# shellcheck source=loadtest/bench-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-lib.sh"
cargo build --release --locked -q -p centralita-sessions -p centralita-media -p centralita-loadtest
bench_start sessions 50181 9181
export CENTRALITA_MEDIA_ROLES=digital CENTRALITA_WEBCHAT_ADDR=127.0.0.1:8680
export CENTRALITA_SESSIONS_ENDPOINT=http://127.0.0.1:50181 CENTRALITA_CRM_ENDPOINT=http://127.0.0.1:50184
export CENTRALITA_RECORDING_ENDPOINT=http://127.0.0.1:50185
bench_start media 50183 9183
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "== the machine's limit: the broker's raw produce/consume rate with the platform's client" >&2
"$bin/centralita-loadtest" kafka --messages 100000 --bytes 300 --partitions 3 >&2
echo "== customer message → agent stream" >&2
"$bin/centralita-loadtest" chat --webchat http://127.0.0.1:8680 --media http://127.0.0.1:50183 "$@"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "[bench] logs in $run" >&2
