#!/usr/bin/env bash
# Fuzzes what Shoal parses from outside (stored events, queue messages, job submissions) with
# cargo-fuzz (libFuzzer), on the pinned stable toolchain, each target for a bounded time.
#
#   scripts/fuzz.sh            every target for 20 s (what scripts/test.sh runs)
#   scripts/fuzz.sh 600        every target for 10 minutes
#   scripts/fuzz.sh 600 task_message
#   FUZZ_SEED=1 FUZZ_RUNS=400000 scripts/fuzz.sh 60
#                              reproducible: the same inputs in the same order on every machine,
#                              at most FUZZ_RUNS per target, stopped by the time limit if slower
#                              (what scripts/test.sh runs, so CI does not turn red at random;
#                              the unseeded long runs are what look for new crashes)
#
# Starts from the committed seeds (fuzz/corpus/<target>); what a run discovers goes to
# target/fuzz-corpus/<target> (kept between local runs, never committed). A crash stops the
# run with the reproducer under fuzz/artifacts/<target>/: turn it into a regression test in the
# crate that panicked, fix it, and add the input to the seeds.
#
# cargo-fuzz needs nightly-only rustc flags; RUSTC_BOOTSTRAP=1 lets the stable compiler take
# them. AddressSanitizer is used when the toolchain ships its runtime (stable does on x86_64
# Linux), else the targets run without a sanitizer (safe Rust only: panics are what we look for).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(event_decode task_message job_submission)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: installing it with cargo install cargo-fuzz --locked" >&2
  cargo install cargo-fuzz --locked
fi

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
sanitizer=none
if ls "$sysroot/lib/rustlib/$host/lib/"*rt.asan.a >/dev/null 2>&1; then
  sanitizer=address
fi
export RUSTC_BOOTSTRAP=1
# The fuzz package has its own target directory; keep it under the workspace's target/.
export CARGO_TARGET_DIR="$root/target/fuzz"

cd fuzz
for target in "${targets[@]}"; do
  printf '\n==> fuzzing %s for %s s (sanitizer: %s)\n' "$target" "$seconds" "$sanitizer"
  corpus="$root/target/fuzz-corpus/$target"
  mkdir -p "$corpus"
  bounds=()
  if [ -n "${FUZZ_SEED:-}" ]; then
    # A seeded run starts from the committed seeds only, so it is the same everywhere.
    corpus="$(mktemp -d)"
    bounds+=("-seed=$FUZZ_SEED")
  fi
  [ -z "${FUZZ_RUNS:-}" ] || bounds+=("-runs=$FUZZ_RUNS")
  cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${bounds[@]}"
done
