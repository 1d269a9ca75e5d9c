#!/usr/bin/env bash
# The Erlang C reference in segments, each on a freshly started local stack, pooled into one
# comparison: tansu's memory storage lists a partition's every stored batch on each fetch,
# so one long run measures the broker slowing down as much as the queue (BENCHMARKS.md).
# Each segment is loadtest/erlang-c-bench.sh with `simulate --segment`; then
# `centralita-loadtest pool-erlang-c` judges SL and ASA over all replicas.
# Segment i runs with seed <first-seed> + i - 1, so the segments draw independently.
#   loadtest/erlang-c-pooled.sh [--segments 3] [--first-seed 1001]
#     [--scenario loadtest/scenarios/erlang-c-segment.yaml] [--json out.json]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
segments=3
first_seed=1001
scenario="$here/scenarios/erlang-c-segment.yaml"
json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --segments) segments="$2"; shift 2 ;;
    --first-seed) first_seed="$2"; shift 2 ;;
    --scenario) scenario="$(realpath "$2")"; shift 2 ;;
    --json) json="$(realpath -m "$2")"; shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
for n in "$segments" "$first_seed"; do
  case "$n" in '' | *[!0-9]*) echo "--segments and --first-seed take whole numbers, not \`$n\`" >&2; exit 2 ;; esac
done
[ "$segments" -ge 2 ] || { echo "--segments must be at least 2" >&2; exit 2; }
out="$(mktemp -d "${TMPDIR:-/tmp}/erlang-c-pooled.XXXXXX")"
files=()
for i in $(seq 1 "$segments"); do
  echo "[pooled] segment $i of $segments on a fresh stack (results in $out)" >&2
  "$here/../deploy/local/stack.sh" down >&2
  "$here/erlang-c-bench.sh" --scenario "$scenario" --segment --seed $((first_seed + i - 1)) \
    --json "$out/segment-$i.json" ||
    echo "[pooled] segment $i exited $? (its problems are pooled below)" >&2
  files+=("$out/segment-$i.json")
done
# shellcheck source=deploy/local/env.sh
source "$here/../deploy/local/env.sh"
pool_args=("${files[@]}")
[ -n "$json" ] && pool_args+=(--json "$json")
"$CARGO_TARGET_DIR/release/centralita-loadtest" pool-erlang-c "${pool_args[@]}"
