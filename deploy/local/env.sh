# Shared settings of the local stack scripts (sourced, not run).
# Everything the stack writes lives under $CENTRALITA_DATA (project-local, git-ignored);
# tools and build caches that outlive a clone live under $CENTRALITA_CACHE.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CENTRALITA_CACHE="${CENTRALITA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/centralita}"
export CENTRALITA_DATA="${CENTRALITA_DATA:-$repo_root/.local}"
export CENTRALITA_VENV="${CENTRALITA_VENV:-$CENTRALITA_CACHE/venv}"
export TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
export TANSU_BIN="${TANSU_BIN:-$CENTRALITA_CACHE/tools/bin/tansu}"
export BUF_VERSION="${BUF_VERSION:-1.75.0}"
export BUF_BIN="${BUF_BIN:-$CENTRALITA_CACHE/npm/node_modules/.bin/buf}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CENTRALITA_CACHE/target}"
# Loopback ports of the local stack (chosen away from the packages' defaults).
export CENTRALITA_REDIS_PORT="${CENTRALITA_REDIS_PORT:-6390}"
export CENTRALITA_PG_PORT="${CENTRALITA_PG_PORT:-5440}"
export CENTRALITA_KAFKA_PORT="${CENTRALITA_KAFKA_PORT:-9092}"
export CENTRALITA_REDIS_URL="${CENTRALITA_REDIS_URL:-redis://127.0.0.1:$CENTRALITA_REDIS_PORT}"
export CENTRALITA_DATABASE_URL="${CENTRALITA_DATABASE_URL:-postgres://centralita:centralita@127.0.0.1:$CENTRALITA_PG_PORT/centralita}"
export CENTRALITA_KAFKA_BROKERS="${CENTRALITA_KAFKA_BROKERS:-127.0.0.1:$CENTRALITA_KAFKA_PORT}"
mkdir -p "$CENTRALITA_CACHE" "$CENTRALITA_DATA"
