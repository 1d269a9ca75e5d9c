#!/usr/bin/env bash
# Builds and runs every Centralita service on loopback against the local stack.
#   deploy/local/services.sh start | stop | restart <service> | status
# Logs: $CENTRALITA_DATA/logs/<run name>/<service>.log (JSON lines). gRPC ports 50051-50056,
# admin ports 9101-9106 (override the base with CENTRALITA_GRPC_BASE / CENTRALITA_ADMIN_BASE).
# CENTRALITA_PROFILE=release runs release binaries (build them first: cargo build --release).
# media's SIP front door (UDP and TCP) listens on 127.0.0.1:$CENTRALITA_SIP_PORT, by default
# 5060 plus the admin base's offset from 9101 (5060 for the dev run, 5160 for test.sh's e2e).
# The web console (centralita-console, services/console built with npm when its sources
# changed) listens on 127.0.0.1:$CENTRALITA_CONSOLE_PORT, by default 9650 plus the same offset
# (`services.sh console-url`; its admin port is the next one); the services grant it gRPC-Web CORS (CENTRALITA_GRPC_WEB_ORIGINS)
# and its development sign-in is on (CENTRALITA_CONSOLE_DEV_SIGN_IN=false turns it off).
# Its RTP ports (CENTRALITA_RTP_PORTS) are 1000 per run below the kernel's ephemeral range:
# 20000-20999 for the dev run, 21000-21999 for the e2e run, 22000-22999 for admin base 9301.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"

SERVICES=(sessions routing media crm recording reporting)
grpc_base="${CENTRALITA_GRPC_BASE:-50051}"
admin_base="${CENTRALITA_ADMIN_BASE:-9101}"
sip_port="${CENTRALITA_SIP_PORT:-$((5060 + admin_base - 9101))}"
# media's SIP over TLS listens on 127.0.0.1:$((sip_port + 1)) (5061 for the dev run, 5161 for
# test.sh's e2e) with a self-signed certificate for 127.0.0.1 and localhost that `start`
# makes with openssl once per run ($CENTRALITA_DATA/certs/<run name>/sip.crt and sip.key);
# CENTRALITA_SIP_TLS=false leaves TLS off.
sip_certs="$CENTRALITA_DATA/certs/${CENTRALITA_RUN_NAME:-dev}"
if [ "${CENTRALITA_SIP_TLS:-true}" = true ]; then
  export CENTRALITA_SIP_TLS_ADDR="${CENTRALITA_SIP_TLS_ADDR:-127.0.0.1:$((sip_port + 1))}"
  export CENTRALITA_SIP_TLS_CERT_FILE="${CENTRALITA_SIP_TLS_CERT_FILE:-$sip_certs/sip.crt}"
  export CENTRALITA_SIP_TLS_KEY_FILE="${CENTRALITA_SIP_TLS_KEY_FILE:-$sip_certs/sip.key}"
fi
# media's web chat front door (digital role: HTTP and WebSocket) listens on
# 127.0.0.1:$CENTRALITA_WEBCHAT_PORT, by default 8480 plus the same offset (8580 for test.sh's e2e).
webchat_port="${CENTRALITA_WEBCHAT_PORT:-$((8480 + admin_base - 9101))}"
export CENTRALITA_WEBCHAT_ADDR="127.0.0.1:$webchat_port"
# media's SMS (digital role): the Twilio REST API it sends through, by default
# http://127.0.0.1:8490 plus the same offset, where the e2e tests' fake provider listens
# (8590 for test.sh's e2e); the tenants' auth-token Secrets as files
# $CENTRALITA_DATA/secrets/<run name>/<secret>/authToken.
export CENTRALITA_TWILIO_BASE_URL="${CENTRALITA_TWILIO_BASE_URL:-http://127.0.0.1:$((8490 + admin_base - 9101))}"
export CENTRALITA_SMS_SECRETS_DIR="${CENTRALITA_SMS_SECRETS_DIR:-$CENTRALITA_DATA/secrets/${CENTRALITA_RUN_NAME:-dev}}"
export CENTRALITA_SMS_SEND_BACKOFF_MS="${CENTRALITA_SMS_SEND_BACKOFF_MS:-200}"
# media's WhatsApp (digital role): Meta's Cloud API it sends through, by default
# http://127.0.0.1:8491 plus the same offset (8591 for test.sh's e2e), where the e2e tests'
# fake provider listens; the tenants' Secrets as files $CENTRALITA_DATA/secrets/<run name>/
# <secretName>/{appSecret,accessToken,verifyToken} (the SMS tokens' directory).
export CENTRALITA_WHATSAPP_BASE_URL="${CENTRALITA_WHATSAPP_BASE_URL:-http://127.0.0.1:$((8491 + admin_base - 9101))}"
export CENTRALITA_WHATSAPP_SECRETS_DIR="${CENTRALITA_WHATSAPP_SECRETS_DIR:-$CENTRALITA_SMS_SECRETS_DIR}"
# media's Telegram (digital role): the Bot API it sends through, by default
# http://127.0.0.1:8492 plus the same offset (8592 for test.sh's e2e), where the e2e tests'
# fake Bot API listens; the tenants' Secrets as files <secretName>/{botToken,webhookSecret}
# in the SMS tokens' directory.
export CENTRALITA_TELEGRAM_BASE_URL="${CENTRALITA_TELEGRAM_BASE_URL:-http://127.0.0.1:$((8492 + admin_base - 9101))}"
export CENTRALITA_TELEGRAM_SECRETS_DIR="${CENTRALITA_TELEGRAM_SECRETS_DIR:-$CENTRALITA_SMS_SECRETS_DIR}"
# media's Messenger and Instagram (digital role): the Graph API they send through, by
# default http://127.0.0.1:8493 plus the same offset (8593 for test.sh's e2e), where the e2e
# tests' fake Send API listens (and serves customers' files: its host is allowed); the
# tenants' Secrets as files <secretName>/{appSecret,pageAccessToken,verifyToken} in the SMS
# tokens' directory.
export CENTRALITA_MESSENGER_BASE_URL="${CENTRALITA_MESSENGER_BASE_URL:-http://127.0.0.1:$((8493 + admin_base - 9101))}"
export CENTRALITA_MESSENGER_SECRETS_DIR="${CENTRALITA_MESSENGER_SECRETS_DIR:-$CENTRALITA_SMS_SECRETS_DIR}"
# media's inbound SMTP listener (digital role): 127.0.0.1:$CENTRALITA_SMTP_PORT, by default
# 25425 plus the admin base's offset (25525 for test.sh's e2e); replies go through each tenant's
# relay (spec.email.relay), its credentials' Secret under the SMS secrets' directory; 1 MiB
# messages at most locally (e2e test_email.py sends a bigger one).
smtp_port="${CENTRALITA_SMTP_PORT:-$((25425 + admin_base - 9101))}"
export CENTRALITA_SMTP_ADDR="127.0.0.1:$smtp_port"
export CENTRALITA_EMAIL_SECRETS_DIR="${CENTRALITA_EMAIL_SECRETS_DIR:-$CENTRALITA_SMS_SECRETS_DIR}"
export CENTRALITA_EMAIL_SEND_BACKOFF_MS="${CENTRALITA_EMAIL_SEND_BACKOFF_MS:-200}"
export CENTRALITA_SMTP_MAX_MESSAGE_BYTES="${CENTRALITA_SMTP_MAX_MESSAGE_BYTES:-1048576}"
# media's registrar of agents' phones: each tenant's Secret of HA1 digests as files
# $CENTRALITA_DATA/secrets/<run name>/<credentialsSecret>/<agent id> (the SMS tokens' directory).
export CENTRALITA_SIP_SECRETS_DIR="${CENTRALITA_SIP_SECRETS_DIR:-$CENTRALITA_SMS_SECRETS_DIR}"
# recording's playback HTTP port (signed URLs of recordings): 9190 plus the same offset
# (9290 for test.sh's e2e run).
playback_port="${CENTRALITA_PLAYBACK_PORT:-$((9190 + admin_base - 9101))}"
console_port="${CENTRALITA_CONSOLE_PORT:-$((9650 + admin_base - 9101))}"
export CENTRALITA_GRPC_WEB_ORIGINS="${CENTRALITA_GRPC_WEB_ORIGINS:-http://127.0.0.1:$console_port,http://localhost:$console_port}"
# The local identity provider (deploy/local/idp: node-oidc-provider, a certified OpenID
# Provider) on the console's port + 2, standing in for a BPO's: the console signs in through
# it (authorization code with PKCE) and every service accepts its tokens (its JWKS).
# CENTRALITA_LOCAL_IDP=false leaves it out.
idp_port="${CENTRALITA_IDP_PORT:-$((console_port + 2))}"
if [ "${CENTRALITA_LOCAL_IDP:-true}" = true ]; then
  export CENTRALITA_JWT_JWKS_URL="${CENTRALITA_JWT_JWKS_URL:-http://127.0.0.1:$idp_port/jwks}"
  export CENTRALITA_JWT_IDP_ISSUER="${CENTRALITA_JWT_IDP_ISSUER:-http://127.0.0.1:$idp_port}"
  export CENTRALITA_JWT_IDP_AUDIENCE="${CENTRALITA_JWT_IDP_AUDIENCE:-centralita-api}"
  export CENTRALITA_CONSOLE_OIDC_ISSUER="${CENTRALITA_CONSOLE_OIDC_ISSUER:-http://127.0.0.1:$idp_port}"
  export CENTRALITA_CONSOLE_OIDC_CLIENT_ID="${CENTRALITA_CONSOLE_OIDC_CLIENT_ID:-centralita-console}"
  export CENTRALITA_CONSOLE_OIDC_RESOURCE="${CENTRALITA_CONSOLE_OIDC_RESOURCE:-urn:centralita:api}"
fi
rtp_first=$((20000 + (admin_base - 9101) * 10))
rtp_ports="${CENTRALITA_RTP_PORTS:-$rtp_first-$((rtp_first + 999))}"
bin="$CARGO_TARGET_DIR/${CENTRALITA_PROFILE:-debug}"
export CENTRALITA_JWT_PUBLIC_KEY_FILE="${CENTRALITA_JWT_PUBLIC_KEY_FILE:-$repo_root/deploy/local/dev-keys/jwt-ed25519.pub}"
export CENTRALITA_JWT_PRIVATE_KEY_FILE="${CENTRALITA_JWT_PRIVATE_KEY_FILE:-$repo_root/deploy/local/dev-keys/jwt-ed25519.key}"
# A second set of services (the end-to-end tests) runs beside the dev one under its own name.
name="${CENTRALITA_RUN_NAME:-dev}"
logs="$CENTRALITA_DATA/logs/$name"
run="$CENTRALITA_DATA/run/$name"
mkdir -p "$logs" "$run"
# recording: objects and spool under the run's data directory, the development keys.
export CENTRALITA_PLAYBACK_ADDR="127.0.0.1:$playback_port"
export CENTRALITA_RECORDING_STORE_URL="${CENTRALITA_RECORDING_STORE_URL:-file://$CENTRALITA_DATA/recordings/$name/objects}"
export CENTRALITA_RECORDING_SPOOL_DIR="${CENTRALITA_RECORDING_SPOOL_DIR:-$CENTRALITA_DATA/recordings/$name/spool}"
export CENTRALITA_RECORDING_KEYS_FILE="${CENTRALITA_RECORDING_KEYS_FILE:-$repo_root/deploy/local/dev-keys/recording-keys.yaml}"
export CENTRALITA_PLAYBACK_URL_KEY_FILE="${CENTRALITA_PLAYBACK_URL_KEY_FILE:-$repo_root/deploy/local/dev-keys/recording-url.key}"

# media: the queue announcements' prompts, spoken once per machine (deploy/prompts/generate.sh).
export CENTRALITA_PROMPTS_DIR="${CENTRALITA_PROMPTS_DIR:-$CENTRALITA_DATA/prompts}"

# CENTRALITA_TLS=true: mutual TLS on every service's gRPC port and between the services
# (platform crate::tls). `start` makes a CA and one certificate per service (and `client`,
# for the CLI and the tests) with deploy/local/tls-certs.sh in $CENTRALITA_DATA/certs/<run
# name>/tls/, once; the services read them again every CENTRALITA_TLS_RELOAD_INTERVAL (30s),
# so `deploy/local/tls-certs.sh DIR leaf sessions` rotates sessions' certificate under it.
# The endpoints become https://; the console is left out (a browser holds no client
# certificate: in a cluster the Ingress presents one, see the chart's `tls`).
tls_dir="$CENTRALITA_DATA/certs/$name/tls"
scheme=http
if [ "${CENTRALITA_TLS:-false}" = true ]; then
  scheme=https
  export CENTRALITA_CONSOLE=false
  export CENTRALITA_TLS_CA_FILE="$tls_dir/ca.crt"
fi
# The sessions the other services reach: this run's, unless CENTRALITA_PEER_SESSIONS_ENDPOINT
# names another (the erasure replay test rebuilds every other store beside the suite's sessions).
# CENTRALITA_CONSOLE=false leaves the console out.
sessions_endpoint="${CENTRALITA_PEER_SESSIONS_ENDPOINT:-$scheme://127.0.0.1:$grpc_base}"

# CENTRALITA_REPLICAS="sessions routing" also starts a second replica of each named service
# (sessions, routing, reporting or crm: those with no port but gRPC and admin) as
# `<service>-2`: a process of its own with its own static member id, its gRPC and admin
# ports at the bases + 10 + the service's index; clients keep using the first, while the
# replicas share the consumer groups' partitions (moved to the live one when one dies).
instances() {  # one line per process: instance service grpc-port admin-port
  local i=0 r s
  for s in "${SERVICES[@]}"; do echo "$s $s $((grpc_base + i)) $((admin_base + i))"; i=$((i + 1)); done
  for r in ${CENTRALITA_REPLICAS:-}; do
    case "$r" in sessions|routing|reporting|crm) ;; *) echo "CENTRALITA_REPLICAS: '$r' cannot run twice here (sessions, routing, reporting, crm)" >&2; exit 2 ;; esac
    i=0
    for s in "${SERVICES[@]}"; do
      [ "$s" = "$r" ] && echo "$s-2 $s $((grpc_base + 10 + i)) $((admin_base + 10 + i))"
      i=$((i + 1))
    done
  done
}

# The certificate and key of `$1` (a service, or `client`) as env assignments, with TLS on.
tls_env() {
  [ "$scheme" = https ] || return 0
  echo "CENTRALITA_TLS_CERT_FILE=$tls_dir/$1.crt CENTRALITA_TLS_KEY_FILE=$tls_dir/$1.key"
}

endpoints() {
  local i=0 out=()
  for s in "${SERVICES[@]}"; do out+=("$s=127.0.0.1:$((grpc_base + i))"); i=$((i + 1)); done
  (IFS=,; echo "${out[*]}")
}

start() {
  # CENTRALITA_SKIP_BUILD=1 runs the binaries already built (e.g. while the tree is being edited).
  [ -n "${only:-}" ] || [ -n "${CENTRALITA_SKIP_BUILD:-}" ] || (cd "$repo_root" && cargo build --workspace --bins -q)
  "$repo_root/deploy/prompts/generate.sh" "$CENTRALITA_PROMPTS_DIR"
  if [ -n "${CENTRALITA_SIP_TLS_CERT_FILE:-}" ] && [ ! -s "$CENTRALITA_SIP_TLS_CERT_FILE" ]; then
    mkdir -p "$(dirname "$CENTRALITA_SIP_TLS_CERT_FILE")"
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
      -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      -keyout "$CENTRALITA_SIP_TLS_KEY_FILE" -out "$CENTRALITA_SIP_TLS_CERT_FILE" 2>/dev/null
    chmod 600 "$CENTRALITA_SIP_TLS_KEY_FILE"
  fi
  if [ "$scheme" = https ]; then
    [ -s "$tls_dir/ca.crt" ] || "$repo_root/deploy/local/tls-certs.sh" "$tls_dir" ca
    for leaf in "${SERVICES[@]}" client; do
      [ -s "$tls_dir/$leaf.crt" ] || "$repo_root/deploy/local/tls-certs.sh" "$tls_dir" leaf "$leaf"
    done
  fi
  # The identity provider first: the services read its keys as they start.
  [ -n "${only:-}" ] || [ "${CENTRALITA_LOCAL_IDP:-true}" != true ] || start_idp
  local list inst s grpc admin
  list="$(instances)"
  while read -r inst s grpc admin; do
    # `restart <service>`: just that one (same ports and env as `start` gives it).
    if [ -n "${only:-}" ] && [ "$inst" != "$only" ]; then continue; fi
    local pidf="$run/$inst.pid"
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then continue; fi
    # media reaches sessions (the first service), crm (the fourth: SMS opt-outs) and recording (the fifth), and takes its SIP
    # port; crm reaches sessions, media (the third) and recording for the subject access export; others ignore these.
    CENTRALITA_GRPC_ADDR="127.0.0.1:$grpc" CENTRALITA_ADMIN_ADDR="127.0.0.1:$admin" \
      CENTRALITA_SESSIONS_ENDPOINT="$sessions_endpoint" CENTRALITA_CRM_ENDPOINT="$scheme://127.0.0.1:$((grpc_base + 3))" CENTRALITA_RECORDING_ENDPOINT="$scheme://127.0.0.1:$((grpc_base + 4))" CENTRALITA_SIP_ADDR="127.0.0.1:$sip_port" CENTRALITA_RTP_PORTS="$rtp_ports" \
      CENTRALITA_MEDIA_ENDPOINT="$scheme://127.0.0.1:$((grpc_base + 2))" \
      CENTRALITA_KAFKA_GROUP_INSTANCE_ID="$name-$inst" env $(tls_env "$s") nohup "$bin/centralita-$s" >>"$logs/$inst.log" 2>&1 &
    echo $! >"$pidf"
    echo "[services] $inst grpc 127.0.0.1:$grpc admin http://127.0.0.1:$admin" >&2
  done <<<"$list"
  [ -n "${only:-}" ] || [ "${CENTRALITA_CONSOLE:-true}" != true ] || start_console
}

# Starts one service again (after a crash, or a chaos run's kill -9) with the env `start`
# gives it, stopping it first if it still runs; waits up to 60 s for its /readyz.
restart() {
  only="$1"
  local list inst s grpc admin found=""
  list="$(instances)"
  while read -r inst s grpc admin; do [ "$inst" = "$only" ] && found=$admin; done <<<"$list"
  [ -n "$found" ] || { echo "restart: unknown service '$only' (one of $(cut -d' ' -f1 <<<"$list" | paste -sd' '))" >&2; exit 2; }
  local pidf="$run/$only.pid"
  if [ -f "$pidf" ]; then
    local pid; pid="$(cat "$pidf")"
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
  fi
  start
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$found/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "restart: $only not ready within 60 s" >&2; exit 1
}

# The browser-facing gRPC-Web endpoints of the services the console uses (media: the chat pane).
console_endpoints() {
  endpoints | tr ',' '\n' | grep -E '^(sessions|crm|reporting|media)=' | sed 's#=#=http://#' | paste -sd, -
}

start_idp() {
  local pidf="$run/idp.pid" app="$repo_root/deploy/local/idp"
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then return; fi
  if [ ! -f "$app/node_modules/.package-lock.json" ] || [ "$app/package-lock.json" -nt "$app/node_modules/.package-lock.json" ]; then
    (cd "$app" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error) >&2
  fi
  IDP_PORT="$idp_port" IDP_CONSOLE_ORIGINS="http://127.0.0.1:$console_port,http://localhost:$console_port" \
    IDP_AUDIENCE="$CENTRALITA_JWT_IDP_AUDIENCE" nohup node "$app/idp.mjs" >>"$logs/idp.log" 2>&1 &
  echo $! >"$pidf"
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$idp_port") 2>/dev/null && break
    sleep 0.1
  done
  echo "[services] identity provider http://127.0.0.1:$idp_port (local stand-in for the BPO's)" >&2
}

start_console() {
  local pidf="$run/console.pid" app="$repo_root/services/console"
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then return; fi
  # npm ci from the lock file (offline once the npm cache has it), then a build when the
  # app's sources, lock file or protos are newer than the last one.
  if [ ! -f "$app/node_modules/.package-lock.json" ] || [ "$app/package-lock.json" -nt "$app/node_modules/.package-lock.json" ]; then
    (cd "$app" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error) >&2
  fi
  if [ ! -f "$app/dist/index.html" ] || [ ! -f "$app/dist/widget/centralita-chat.js" ] || [ -n "$(find "$app/src" "$app/widget" "$app/package-lock.json" "$app/index.html" "$repo_root/proto" \
      -path "$app/src/gen" -prune -o -newer "$app/dist/index.html" -print -quit)" ]; then
    npm --prefix "$app" run build --silent >/dev/null
  fi
  CENTRALITA_CONSOLE_ADDR="127.0.0.1:$console_port" CENTRALITA_CONSOLE_ADMIN_ADDR="127.0.0.1:$((console_port + 1))" \
    CENTRALITA_CONSOLE_DIST="$app/dist" \
    CENTRALITA_CONSOLE_ENDPOINTS="$(console_endpoints)" \
    CENTRALITA_CONSOLE_DEV_SIGN_IN="${CENTRALITA_CONSOLE_DEV_SIGN_IN:-true}" \
    nohup "$bin/centralita-console" >>"$logs/console.log" 2>&1 &
  echo $! >"$pidf"
  echo "[services] console http://127.0.0.1:$console_port admin http://127.0.0.1:$((console_port + 1))" >&2
}

stop() {
  local s
  for s in $(instances | cut -d' ' -f1) console idp; do
    local pidf="$run/$s.pid"
    [ -f "$pidf" ] || continue
    local pid; pid="$(cat "$pidf")"
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
  done
  echo "[services] stopped" >&2
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) restart "${2:?usage: $0 restart <service>}" ;;
  status) env $(tls_env client) "$bin/centralita" status --endpoints "$(endpoints)" ;;
  endpoints) endpoints ;;
  console-url) echo "http://127.0.0.1:$console_port" ;;
  *) echo "usage: $0 start|stop|restart <service>|status|endpoints|console-url" >&2; exit 2 ;;
esac
