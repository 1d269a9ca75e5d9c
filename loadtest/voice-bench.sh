#!/usr/bin/env bash
# The voice benchmark (issue 17): call set-up rate and concurrent relayed G.711 calls through
# media, next to a raw UDP relay measured in the same run as the machine's limit.
#
#   loadtest/voice-bench.sh [--calls 100,250,500,750] [--rates 10,25,50,75,100]
#                           [--step-seconds 10] [--hold-seconds 5] [--window-seconds 30]
#                           [--ramp-rate 50] [--ready-margin 20] [--agents N] [--out DIR] [--no-build]
#                           [--no-relay] [--no-rates] [--no-calls] [--no-warmup] [--perf]
#
# 1. Raw relay, for each N of --calls (run just before media's step at the same N): `centralita-loadtest udp-relay` (two sockets per call,
#    latch and forward, no SIP) driven by `centralita-loadtest voice-rtp` (50 PCMU packets/s
#    each way per call, every packet stamped, counted and timed at the other end): loss,
#    transit and delay variation, the relay's CPU over the window.
# 2. The services (release binaries; CENTRALITA_PROFILE=debug for a quick try): sessions, routing and media (voice role) on loopback
#    against the local stack's Redis and broker, under a topic prefix of their own, logs at
#    warn; a tenant of the run's own (ten numbers into one queue, --agents agents each with
#    a fixed phone at one sipp that answers every agent's INVITE), its agents signed in.
# 3. Set-up rate, for each rate of --rates: sipp callers (Debian sip-tester, an independent
#    peer) at that rate for --step-seconds, each call held --hold-seconds then hung up, each
#    with its audio from voice-rtp; sipp's failed calls, INVITE → 200 p50/p99 (rtd 1: media
#    answers at once with treatment and sends no 180), the calls with audio both ways and
#    agent answer (the phone's 200) → first caller audio at the phone. Stops at the first
#    rate with a failed call.
# 4. Concurrent calls, for each N of --calls: N calls set up at --ramp-rate, held; once all
#    have audio both ways, a --window-seconds window: packets sent vs received both ways,
#    transit and delay variation, CPU and RSS of media, sessions, routing, both sipps and the
#    generator; `top -H` of media's threads in the window (and `perf` with --perf).
# Results: the run's directory (printed; results.json and a Markdown table), recorded in
# loadtest/BENCHMARKS.md ("Voice: call set-up and relayed calls").
#
# Ports (the vbench block; override with the same variables): gRPC CENTRALITA_GRPC_BASE
# (29251: sessions, +1 routing, +2 media), admin CENTRALITA_ADMIN_BASE (10451+), SIP
# CENTRALITA_SIP_PORT (25451), media's RTP CENTRALITA_RTP_PORTS (12000-17999); sipp's SIP
# ports VB_PHONE_PORT (18000) and VB_CALLER_PORT (18002), sipp's unused media ports 10 and
# 20 above them; voice-rtp's and udp-relay's sockets are the kernel's (port 0).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/../deploy/local/env.sh"
cd "$repo_root"

calls="100,250,500,750"
rates="10,25,50,75,100"
step_seconds=10
hold_seconds=5
window=30
ramp_rate=50
ready_margin=20
agents=""
out=""
build=1 relay=1 do_rates=1 do_calls=1 perf=0 warmup=1
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) calls="$2"; shift 2 ;;
    --rates) rates="$2"; shift 2 ;;
    --step-seconds) step_seconds="$2"; shift 2 ;;
    --hold-seconds) hold_seconds="$2"; shift 2 ;;
    --window-seconds) window="$2"; shift 2 ;;
    --ramp-rate) ramp_rate="$2"; shift 2 ;;
    --ready-margin) ready_margin="$2"; shift 2 ;;
    --agents) agents="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --no-relay) relay=0; shift ;;
    --no-rates) do_rates=0; shift ;;
    --no-calls) do_calls=0; shift ;;
    --no-warmup) warmup=0; shift ;;
    --perf) perf=1; shift ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
for v in "$step_seconds" "$hold_seconds" "$window" "$ramp_rate" "$ready_margin"; do
  [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt 0 ] || { echo "step, hold, window, ramp rate and ready margin must be positive integers" >&2; exit 2; }
done
IFS=, read -r -a call_steps <<<"$calls"
IFS=, read -r -a rate_steps <<<"$rates"
for v in "${call_steps[@]}" "${rate_steps[@]}"; do
  [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt 0 ] || { echo "--calls and --rates take positive integers, got '$v'" >&2; exit 2; }
done
max_calls=0
for n in "${call_steps[@]}"; do [ "$n" -gt "$max_calls" ] && max_calls=$n; done
max_rate=0
for r in "${rate_steps[@]}"; do [ "$r" -gt "$max_rate" ] && max_rate=$r; done
# Agents: every concurrent call holds one, and a set-up step's calls each hold one for the
# hold, the bridge and a second of after-contact work.
if [ -z "$agents" ]; then
  agents=$((max_calls + 100))
  [ $((max_rate * (hold_seconds + 4))) -gt "$agents" ] && agents=$((max_rate * (hold_seconds + 4)))
fi
command -v sipp >/dev/null || { echo "sipp (Debian sip-tester) is needed: deploy/local/install.sh" >&2; exit 1; }
# Two sockets per call on each side, and sipp's: raise the open-files limit to the hard one.
ulimit -n "$(ulimit -Hn)"

export CENTRALITA_RUN_NAME="${CENTRALITA_RUN_NAME:-vbench}"
grpc="${CENTRALITA_GRPC_BASE:-29251}"
admin="${CENTRALITA_ADMIN_BASE:-10451}"
sip_port="${CENTRALITA_SIP_PORT:-25451}"
rtp_ports="${CENTRALITA_RTP_PORTS:-12000-17999}"
phone_port="${VB_PHONE_PORT:-18000}"
caller_port="${VB_CALLER_PORT:-18002}"
out="${out:-$CENTRALITA_DATA/bench/voice-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
profile="${CENTRALITA_PROFILE:-release}"
bin="$CARGO_TARGET_DIR/$profile"
lt="$bin/centralita-loadtest"
scen="$here/voice"
py="$(command -v python3)"
export CENTRALITA_KAFKA_TOPIC_PREFIX="$CENTRALITA_RUN_NAME-$(date +%s)."
export CENTRALITA_JWT_PUBLIC_KEY_FILE="$repo_root/deploy/local/dev-keys/jwt-ed25519.pub"
export CENTRALITA_JWT_PRIVATE_KEY_FILE="$repo_root/deploy/local/dev-keys/jwt-ed25519.key"
export CENTRALITA_LOG="${CENTRALITA_LOG:-warn}"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# CPU time (user + system, clock ticks) of a process.
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
wait_file() { for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "no $1" >&2; return 1; }
machine() {
  { echo "== $1 $(date -u +%FT%TZ)"; uptime; nproc; free -m | head -2; } >>"$out/machine.txt"
}

echo "[voice-bench] results in $out" >&2
machine "start"
if [ "$build" = 1 ]; then
  flag=""
  [ "$profile" = release ] && flag=--release
  cargo build $flag --locked -q -p centralita-sessions -p centralita-routing -p centralita-media -p centralita-loadtest
fi

# --- the machine's limit: a raw UDP relay at N calls --------------------------------------------
relay_step() {
  local n="$1" d="$out/relay-$1"
  mkdir -p "$d"
  "$lt" udp-relay --calls "$n" --pairs "$d/pairs" --threads 2 2>"$d/relay.log" &
  local rp=$!
  pids+=("$rp")
  wait_file "$d/pairs"
  echo "[voice-bench] raw relay, $n calls" >&2
  machine "relay $n"
  "$lt" voice-rtp --calls "$n" --csv-dir "$d" --peers "$d/pairs" --ready-seconds 20 --settle-seconds 2 \
    --window-seconds "$window" --watch "relay=$rp" --json "$d/rtp.json" 2>&1 | grep -v '^\[voice-rtp\] [0-9]* of' >&2
  stop_pid "$rp"
}

if [ "$do_rates" = 0 ] && [ "$do_calls" = 0 ]; then
  [ "$relay" = 1 ] && for n in "${call_steps[@]}"; do relay_step "$n"; done
  machine "end"
  "$py" "$scen/report.py" "$out"
  exit 0
fi

# --- 2. the services --------------------------------------------------------------------------
start_service() {
  local service="$1" i="$2"
  CENTRALITA_GRPC_ADDR="127.0.0.1:$((grpc + i))" CENTRALITA_ADMIN_ADDR="127.0.0.1:$((admin + i))" \
    CENTRALITA_SESSIONS_ENDPOINT="http://127.0.0.1:$grpc" CENTRALITA_SIP_ADDR="127.0.0.1:$sip_port" \
    CENTRALITA_RTP_PORTS="$rtp_ports" CENTRALITA_MEDIA_ROLES=voice \
    CENTRALITA_SIP_SECRETS_DIR="$out/secrets" CENTRALITA_SMS_SECRETS_DIR="$out/secrets" \
    CENTRALITA_KAFKA_GROUP_INSTANCE_ID="$CENTRALITA_RUN_NAME-$service" \
    "$bin/centralita-$service" >>"$out/$service.log" 2>&1 &
  pids+=($!)
  eval "${service}_pid=$!"
}
mkdir -p "$out/secrets"
start_service sessions 0
start_service routing 1
start_service media 2
for i in 0 1 2; do
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$((admin + i))/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$((admin + i))/readyz" >/dev/null || { echo "[voice-bench] service $i not ready; logs in $out" >&2; exit 1; }
done
echo "[voice-bench] sessions, routing, media ready (prefix $CENTRALITA_KAFKA_TOPIC_PREFIX)" >&2

tenant="vb-$(date +%s)"
numbers=""
base=$((RANDOM % 9000 + 1000))
for i in $(seq 0 9); do numbers="$numbers${numbers:+,}+349${base}0000$i"; done
# Upserts and sign-ins are idempotent: a sessions still loading its tenant set is tried again.
for attempt in 1 2 3; do
  "$lt" voice-agents --sessions "http://127.0.0.1:$grpc" --tenant "$tenant" --agents "$agents" \
    --numbers "$numbers" --phone "127.0.0.1:$phone_port" --after-contact-work-seconds 1 2>"$out/agents.log" && break
  [ "$attempt" = 3 ] && { tail -5 "$out/agents.log" >&2; exit 1; }
  sleep 3
done
grep -v '^ ' "$out/agents.log" >&2 || true
# media reads the tenant from the tenants topic as sessions does.
sleep 3

# One step: voice-rtp, the phone's sipp, the callers' sipp at `rate` for `n` calls held `hold`
# seconds. Writes $d/{rtp,sipp}.json and $d/cpu.json (media's CPU over the callers' run).
step() {
  local d="$1" n="$2" rate="$3" hold="$4" ready="$5" settle="$6" win="$7"
  mkdir -p "$d"
  : >"$d/watch"
  "$lt" voice-rtp --calls "$n" --csv-dir "$d" --numbers "$numbers" --ready-seconds "$ready" \
    --settle-seconds "$settle" --window-seconds "$win" --answers "$d/phone.log" \
    --watch "media=$media_pid,sessions=$sessions_pid,routing=$routing_pid" --watch-file "$d/watch" \
    --json "$d/rtp.json" 2>"$d/rtp.log" &
  local gp=$!
  pids+=("$gp")
  wait_file "$d/callers.csv"
  (cd "$d" && exec sipp -sf "$scen/phone.xml" -i 127.0.0.1 -p "$phone_port" -mp "$((phone_port + 10))" \
    -inf agents.csv -trace_logs -log_file phone.log \
    -trace_err -error_file phone-err.log -nostdin >phone.out 2>&1) &
  local pp=$!
  pids+=("$pp")
  sleep 0.5
  local t0 m0
  t0=$(date +%s.%N)
  m0=$(ticks "$media_pid")
  (cd "$d" && exec sipp "127.0.0.1:$sip_port" -sf "$scen/caller.xml" -i 127.0.0.1 -p "$caller_port" -mp "$((caller_port + 20))" \
    -inf callers.csv -r "$rate" -m "$n" -l 5000 -d "$((hold * 1000))" \
    -trace_rtt -rtt_freq 1 -trace_stat -stf stat.csv -fd 1 -trace_err -error_file caller-err.log \
    -nostdin -timeout "$((n / rate + hold + 120))s" -timeout_error >caller.out 2>&1) &
  local cp=$!
  pids+=("$cp")
  echo "sipp_callers=$cp" >>"$d/watch"
  echo "sipp_phone=$pp" >>"$d/watch"
  # media's threads while the calls are up (in the window, for a concurrency step).
  if [ "$win" -gt 0 ]; then
    (sleep "$((n / rate + 5 + settle))"; top -H -b -n 2 -d 5 -p "$media_pid" >"$d/top-media.txt" 2>&1
     if [ "$perf" = 1 ] && command -v perf >/dev/null; then
       perf record -F 499 -g -p "$media_pid" -o "$d/perf.data" -- sleep 8 >/dev/null 2>&1 &&
         perf report -i "$d/perf.data" --stdio --no-children --percent-limit 1.5 2>/dev/null | head -150 >"$d/perf.txt"
     fi) &
    pids+=($!)
  fi
  wait "$cp" || true
  local t1 m1
  t1=$(date +%s.%N)
  m1=$(ticks "$media_pid")
  wait "$gp" || true
  stop_pid "$pp"
  "$py" "$scen/sipp_summary.py" "$d/stat.csv" "$(ls "$d"/caller_*_rtt.csv 2>/dev/null | head -1)" >"$d/sipp.json" || echo '{}' >"$d/sipp.json"
  "$py" -c "import json,sys; print(json.dumps({'seconds': $t1 - $t0, 'media_cpu_seconds': ($m1 - $m0) / 100}))" >"$d/cpu.json"
  echo "[voice-bench]   sipp: $(cat "$d/sipp.json")" >&2
  grep '^\[voice-rtp\] [0-9]*/' "$d/rtp.log" >&2 || tail -2 "$d/rtp.log" >&2
}

# A first call, so the first step does not pay for the warm-up (connections, caches).
if [ "$warmup" = 1 ]; then
  step "$out/warmup" 3 1 2 30 0 0
  if [ "$(grep -o '"failed": [0-9]*' "$out/warmup/sipp.json" | grep -o '[0-9]*$')" != 0 ]; then
    echo "[voice-bench] the warm-up calls failed: see $out/warmup and the services' logs in $out" >&2
    exit 1
  fi
fi

# --- 3. set-up rate ---------------------------------------------------------------------------
if [ "$do_rates" = 1 ]; then
  for r in "${rate_steps[@]}"; do
    n=$((r * step_seconds))
    echo "[voice-bench] set-up rate $r calls/s: $n calls held $hold_seconds s" >&2
    machine "rate $r"
    step "$out/rate-$r" "$n" "$r" "$hold_seconds" "$((step_seconds + hold_seconds + 20))" 0 0
    failed=$(grep -o '"failed": [0-9]*' "$out/rate-$r/sipp.json" | grep -o '[0-9]*$' || echo 1)
    # Agents back from after-contact work before the next step.
    sleep 4
    if [ "${failed:-1}" != 0 ]; then
      echo "[voice-bench] $failed failed calls at $r calls/s: stepping stops" >&2
      break
    fi
  done
fi

# --- 4. concurrent calls, each N right after the raw relay at the same N (the machine, shared
# with other work, is then in about the same state for both) --------------------------------
if [ "$do_calls" = 1 ]; then
  for n in "${call_steps[@]}"; do
    [ "$relay" = 1 ] && relay_step "$n"
    ramp=$((n / ramp_rate + 1))
    ready=$((ramp + ready_margin))
    hold=$((ready + 3 + window + 5))
    echo "[voice-bench] $n concurrent calls (set up at $ramp_rate/s, held $hold s, window $window s)" >&2
    machine "calls $n"
    step "$out/calls-$n" "$n" "$ramp_rate" "$hold" "$ready" 3 "$window"
    [ "$n" = "${call_steps[-1]}" ] || sleep 4
  done
fi

machine "end"
"$py" "$scen/report.py" "$out"
