#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of outside input (fuzz/fuzz_targets/): libFuzzer
# through cargo-fuzz on the nightly toolchain, both installed here if missing.
#   fuzz/run.sh [seconds per target, 20] [target...]      # default: every target
# First each target replays fuzz/regressions/<target>/ (inputs that once broke it), then
# fuzzes for the given time from fuzz/seeds/<target>/ plus the corpus it grew before
# ($CENTRALITA_DATA/fuzz/corpus/<target>, not in git). A panic, a timeout (10 s) or an
# out-of-memory (2 GiB) fails the run; the input is left in fuzz/artifacts/<target>/ —
# fix the cause, then move it to fuzz/regressions/<target>/ so it is replayed for good.
# Env: FUZZ_JOBS (worker processes per target, libFuzzer's -fork; unset: one process).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/../deploy/local/env.sh"
seconds="${1:-20}"
shift || true
toolchain=nightly
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
  echo "[fuzz] installing the nightly toolchain (minimal profile)" >&2
  rustup toolchain install "$toolchain" --profile minimal
fi
fuzz_version=0.13.2
export PATH="$CENTRALITA_CACHE/tools/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -q "$fuzz_version"; then
  echo "[fuzz] installing cargo-fuzz $fuzz_version" >&2
  cargo install cargo-fuzz --version "$fuzz_version" --locked --root "$CENTRALITA_CACHE/tools" -q
fi
# Its own target directory: nightly with sanitizer coverage shares no artifact with the
# workspace's stable build.
export CARGO_TARGET_DIR="$CENTRALITA_CACHE/fuzz-target"
cd "$here"
mapfile -t targets < <(if [ $# -gt 0 ]; then printf '%s\n' "$@"; else cargo +"$toolchain" fuzz list; fi)
# No address sanitizer: the code is safe Rust (memory errors are not what is looked for;
# panics, hangs and runaway allocation are), and it builds and runs several times faster.
build=(--sanitizer none --release --debug-assertions)
echo "[fuzz] building ${#targets[@]} targets" >&2
cargo +"$toolchain" fuzz build "${build[@]}" >&2
failed=()
for t in "${targets[@]}"; do
  corpus="$CENTRALITA_DATA/fuzz/corpus/$t"
  mkdir -p "$corpus" "$here/seeds/$t" "$here/regressions/$t"
  if compgen -G "$here/regressions/$t/*" >/dev/null; then
    # Each regression input once (libFuzzer runs the files given and exits).
    if ! cargo +"$toolchain" fuzz run "${build[@]}" "$t" "$here"/regressions/"$t"/* -- -runs=1 >"$CENTRALITA_DATA/fuzz/$t.replay.log" 2>&1; then
      echo "[fuzz] $t: a regression input fails again ($CENTRALITA_DATA/fuzz/$t.replay.log)" >&2
      failed+=("$t")
      continue
    fi
  fi
  log="$CENTRALITA_DATA/fuzz/$t.log"
  if cargo +"$toolchain" fuzz run "${build[@]}" "$t" "$corpus" "$here/seeds/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      ${FUZZ_JOBS:+-fork="$FUZZ_JOBS"} >"$log" 2>&1; then
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')"
    echo "[fuzz] $t: ${runs:-?} inputs in ${seconds} s, coverage ${cov:-?} edges, corpus $(ls "$corpus" | wc -l) — no failure" >&2
  else
    echo "[fuzz] $t FAILED: see $log and $here/artifacts/$t/" >&2
    grep -E "panicked|ERROR: libFuzzer|SUMMARY" "$log" | head -5 >&2 || true
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "[fuzz] failures: ${failed[*]}" >&2
  exit 1
fi
echo "[fuzz] ${#targets[@]} targets, ${seconds} s each: no panic, hang or runaway allocation" >&2
