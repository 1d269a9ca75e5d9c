#!/usr/bin/env bash
# Installs what the local stack needs, once per machine; safe to re-run.
#  - Debian packages: redis-server, postgresql, protobuf-compiler (+ python venv bits), sip-tester
#    (sipp: the independent SIP caller/trunk of the voice end-to-end tests), baresip (agents'
#    softphones in them), chromium (the console's browser tests), sox and ffmpeg (WAV checks), espeak-ng (prompts)
#  - tansu (Kafka-protocol broker) via `cargo install`, into a persistent cache outside the clone,
#    with deploy/local/tansu-storage.patch and tansu-broker.patch applied to its storage and
#    broker crates (see those files)
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
command -v patch >/dev/null || need_pkgs+=(patch)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
command -v npm >/dev/null || need_pkgs+=(npm)
command -v sipp >/dev/null || need_pkgs+=(sip-tester)
# baresip: the agents' softphones of the voice end-to-end tests (auto-answer, a tone file as
# microphone, what they hear recorded).
command -v baresip >/dev/null || need_pkgs+=(baresip)
# Chromium for the console's browser test (e2e test_console.py, Playwright with executable_path).
command -v chromium >/dev/null || need_pkgs+=(chromium)
# sox and ffprobe check the recording service's WAV files (e2e test_recording.py).
command -v sox >/dev/null || need_pkgs+=(sox)
# espeak-ng speaks the queue announcements' prompts (deploy/prompts/generate.sh, run by
# services.sh into $CENTRALITA_DATA/prompts).
command -v espeak-ng >/dev/null || need_pkgs+=(espeak-ng)
command -v ffprobe >/dev/null || need_pkgs+=(ffmpeg)
# swaks: the independent SMTP client sending mail to media's listener (e2e test_email.py).
command -v swaks >/dev/null || need_pkgs+=(swaks)
# openssl makes the local stack's SIP over TLS certificate (services.sh).
command -v openssl >/dev/null || need_pkgs+=(openssl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "apt-get install ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # Debian starts the packaged services; the stack runs its own instances on other ports.
  (service redis-server stop || true) >/dev/null 2>&1
  (service postgresql stop || true) >/dev/null 2>&1
fi

# tansu with our patches to its storage and broker crates: rebuilt when the version or a
# patch changes.
tansu_stamp="$TANSU_VERSION $(cat "$here/tansu-storage.patch" "$here/tansu-broker.patch" | sha256sum | cut -d' ' -f1)"
if ! "$TANSU_BIN" --version >/dev/null 2>&1 || [ "$(cat "$CENTRALITA_CACHE/tools/tansu.stamp" 2>/dev/null)" != "$tansu_stamp" ]; then
  log "cargo install tansu $TANSU_VERSION with tansu-storage.patch and tansu-broker.patch (about 7-12 minutes cold)"
  # The pristine tansu-storage and tansu-broker sources, from the crates registry, patched.
  fetch="$(mktemp -d)"
  mkdir -p "$fetch/src"
  printf '[package]\nname = "fetch-tansu"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\ntansu-storage = "=%s"\ntansu-broker = "=%s"\n' \
    "$TANSU_VERSION" "$TANSU_VERSION" >"$fetch/Cargo.toml"
  echo 'fn main() {}' >"$fetch/src/main.rs"
  cargo fetch -q --manifest-path "$fetch/Cargo.toml" >&2
  rm -rf "$fetch"
  patched=()
  for part in storage broker; do
    crate="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/tansu-"$part"-"$TANSU_VERSION".crate | head -1)"
    dir="$CENTRALITA_CACHE/tansu-$part-patched"
    rm -rf "$dir"
    mkdir -p "$dir"
    tar -xzf "$crate" -C "$dir" --strip-components=1
    patch -s -p1 -d "$dir" <"$here/tansu-$part.patch"
    patched+=(--config "patch.crates-io.tansu-$part.path=\"$dir\"")
  done
  CARGO_TARGET_DIR="$CENTRALITA_CACHE/tansu-build" \
    cargo install tansu --locked --force --version "$TANSU_VERSION" \
    --features dynostore,postgres --root "$CENTRALITA_CACHE/tools" "${patched[@]}" >&2
  rm -rf "$CENTRALITA_CACHE/tansu-build"
  echo "$tansu_stamp" >"$CENTRALITA_CACHE/tools/tansu.stamp"
fi

if [ ! -x "$CENTRALITA_VENV/bin/python" ] || ! "$CENTRALITA_VENV/bin/python" -c 'import kafka, confluent_kafka, grpc, grpc_tools, grpc_health, yaml, pytest, helm_python, kubernetes_validate, jsonschema, playwright' 2>/dev/null; then
  log "python venv with kafka-python, confluent-kafka, grpcio, pytest, helm-python-sdk, kubernetes-validate"
  python3 -m venv "$CENTRALITA_VENV"
  "$CENTRALITA_VENV/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
if ! "$BUF_BIN" --version >/dev/null 2>&1; then
  log "npm install @bufbuild/buf $BUF_VERSION (proto lint)"
  npm install --prefix "$CENTRALITA_CACHE/npm" --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2
fi
log "ok"
