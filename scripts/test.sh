#!/usr/bin/env bash
# Runs every test of Shoal: formatting, lints, and the whole test suite against real services.
# This is the README's test command, and what CI (.ci/run) calls.
#
# It starts what the tests need and stops it afterwards:
#   - a throwaway PostgreSQL 15 cluster (scripts/pg.sh; data under target/test-pg)
#   - moto_server (AWS SQS emulator), installed with pip if missing; each SQS test binary starts its own
#   - Chromium (Debian package) for the dashboard's browser tests, installed if missing
#   - schemathesis 4 (PyPI) for scripts/api-fuzz.sh, into target/api-fuzz/venv if missing
#   - cargo-fuzz and cargo-deny (cargo install), if missing: scripts/fuzz.sh, scripts/audit.sh
# Set SHOAL_TEST_SKIP_LINT=1 to skip fmt/clippy (for a quicker local loop).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is missing: apt-get install python3" >&2; exit 1; }
. scripts/c-toolchain.sh
# SQS tests start their own moto_server on loopback; in this script they must not skip.
if ! command -v moto_server >/dev/null; then
  echo "moto_server is missing: installing it with pip install 'moto[server]'" >&2
  python3 -m pip install --quiet 'moto[server]' || { echo "moto_server is missing and pip could not install it: run pip install 'moto[server]'" >&2; exit 1; }
  hash -r; command -v pyenv >/dev/null && pyenv rehash
  command -v moto_server >/dev/null || { echo "moto[server] is installed but moto_server is not on the PATH (add pip's bin directory to PATH)" >&2; exit 1; }
fi
export SHOAL_REQUIRE_MOTO=1

# A cold debug build of the workspace and its tests takes about 10 GB under target/.
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
echo "free disk: $((avail_kb / 1024 / 1024)) GB"
if [ "$avail_kb" -lt $((6 * 1024 * 1024)) ]; then
  echo "warning: less than 6 GB free on this disk; the build may run out of space" >&2
fi

pgdir="$root/target/test-pg"
cleanup() {
  step "stopping test services"
  scripts/pg.sh stop "$pgdir" || true
}
trap cleanup EXIT

step "starting a throwaway PostgreSQL 15"
scripts/pg.sh stop "$pgdir" 2>/dev/null || true
rm -rf "$pgdir"
SHOAL_TEST_DATABASE_URL=$(scripts/pg.sh start "$pgdir")
export SHOAL_TEST_DATABASE_URL
export SHOAL_REQUIRE_POSTGRES=1
echo "Postgres for tests: $SHOAL_TEST_DATABASE_URL"

if [ "${SHOAL_TEST_SKIP_LINT:-0}" != 1 ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "cargo test (workspace)"
export RUST_BACKTRACE=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --test-threads 4 --no-fail-fast
  # nextest does not run doctests
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked -- --test-threads 4
fi

# The HTTP APIs against their own documents: schemathesis (PyPI) over REST (/openapi.json) and
# GraphQL, a fixed seed and a bounded number of examples, against a real `shoal dev`.
step "API fuzzing: schemathesis over REST and GraphQL (reports in target/api-fuzz/)"
[ -x target/debug/shoal ] || cargo build --locked --bin shoal
SHOAL_BIN="$root/target/debug/shoal" scripts/api-fuzz.sh
# What parses outside input (stored events, queue messages, job submissions), fuzzed briefly;
# seeded, so a run here is reproducible; scripts/fuzz.sh SECONDS fuzzes longer and unseeded.
step "fuzzing: 300,000 seeded runs per target, at most 60 s each (cargo fuzz, stable toolchain)"
FUZZ_SEED=1 FUZZ_RUNS=300000 scripts/fuzz.sh 60

# The dashboard: lint, type check, unit tests, build, and the browser end-to-end run in
# headless Chromium (Debian's package, driven by playwright-core) against a real `shoal dev`.
command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 or newer with npm" >&2; exit 1; }
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing Chromium from Debian's packages (browser tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: install it with 'apt-get install chromium' (as root)" >&2
    exit 1
  fi
fi
step "supply chain: cargo deny (advisories, licenses, bans, sources) and npm audit"
scripts/audit.sh
step "web: npm ci, lint, generated schema types up to date, type check, unit tests, build"
npm --prefix web ci --no-audit --no-fund
npm --prefix web run lint
npm --prefix web run codegen:check
npm --prefix web run typecheck
npm --prefix web test
npm --prefix web run build
step "web: browser end-to-end (screenshots in target/web-screenshots/)"
# The test run above built target/debug/shoal (the binary's integration tests need it), with the
# same features; building it alone would compile a second feature set of every dependency.
[ -x target/debug/shoal ] || cargo build --locked --bin shoal
SHOAL_BIN="$root/target/debug/shoal" npm --prefix web run e2e

# The deployment: Dockerfile lint and build steps, every kustomize overlay rendered, validated
# and checked for its invariants, checkov, terraform fmt (scripts/deploy-check.sh).
# The dashboard's build steps of the image ran above (npm ci, npm run build); the binary's run here.
step "deployment checks (scripts/deploy-check.sh)"
SHOAL_DEPLOY_CHECK_BUILD=binary scripts/deploy-check.sh

# Fifty worker processes against one Postgres, on the SQL queue and on SQS, a fifth of them
# scaled down mid-job: every task exactly once, connections bounded (short form, ~2 minutes).
step "fifty workers, simulated (scripts/fifty-workers.sh)"
SHOAL_BIN="$root/target/debug/shoal" scripts/fifty-workers.sh

# Faults at random, seeded (the seed is printed first; scripts/faults.sh --seed N replays it):
# workers, projector and orchestrator SIGKILLed, Postgres and moto restarted, then the promises
# of docs/guarantees.md checked from the database (short form, ~4 minutes; --long for more).
step "fault injection (scripts/faults.sh)"
SHOAL_BIN="$root/target/debug/shoal" scripts/faults.sh
