#!/usr/bin/env bash
# Installs what the local stack needs, once per machine; safe to re-run.
#  - Debian packages: redis-server, postgresql, protobuf-compiler (+ python venv bits)
#  - tansu (Kafka-protocol broker) via `cargo install`, into a persistent cache outside the clone
#  - a Python venv with the independent clients used by the interop tests
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"

log() { printf '[install] %s\n' "$*" >&2; }

need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || need_pkgs+=(libprotobuf-dev)
command -v cmake >/dev/null || need_pkgs+=(cmake)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
command -v npm >/dev/null || need_pkgs+=(npm)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "apt-get install ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # Debian starts the packaged services; the stack runs its own instances on other ports.
  (service redis-server stop || true) >/dev/null 2>&1
  (service postgresql stop || true) >/dev/null 2>&1
fi

if ! "$TANSU_BIN" --version >/dev/null 2>&1; then
  log "cargo install tansu $TANSU_VERSION (about 12 minutes cold)"
  CARGO_TARGET_DIR="$CENTRALITA_CACHE/tansu-build" \
    cargo install tansu --locked --version "$TANSU_VERSION" \
    --features dynostore,postgres --root "$CENTRALITA_CACHE/tools" >&2
  rm -rf "$CENTRALITA_CACHE/tansu-build"
fi

if [ ! -x "$CENTRALITA_VENV/bin/python" ] || ! "$CENTRALITA_VENV/bin/python" -c 'import kafka, confluent_kafka, grpc, grpc_tools, grpc_health, yaml, pytest, helm_python, kubernetes_validate, jsonschema' 2>/dev/null; then
  log "python venv with kafka-python, confluent-kafka, grpcio, pytest, helm-python-sdk, kubernetes-validate"
  python3 -m venv "$CENTRALITA_VENV"
  "$CENTRALITA_VENV/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
if ! "$BUF_BIN" --version >/dev/null 2>&1; then
  log "npm install @bufbuild/buf $BUF_VERSION (proto lint)"
  npm install --prefix "$CENTRALITA_CACHE/npm" --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2
fi
log "ok"
