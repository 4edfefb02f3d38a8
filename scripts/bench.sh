#!/usr/bin/env bash
# Runs a benchmark in release mode against a throwaway PostgreSQL 15 started like the tests' one
# (scripts/pg.sh, fsync on), with the benchmark binary `shoal-bench` (package bench/, not part of
# the `shoal` binary). Usage: scripts/bench.sh log|e2e|enqueue|latency|projector|fairness [extra
# `shoal-bench ...` flags], e.g. scripts/bench.sh log, scripts/bench.sh e2e --tasks 100000 --handler noop,
# scripts/bench.sh fairness --tasks 20000 --rounds 3
# The report (a Markdown table) goes to stdout; progress to stderr.
#
# scripts/bench.sh peers [flags of bench/peers/peers.py] compares Shoal with graphile-worker and
# pg-boss on one throwaway Postgres of its own (installed with npm from bench/peers/*/package-lock.json,
# Node 22 included), e.g. scripts/bench.sh peers, scripts/bench.sh peers --tasks 2000 --rounds 1,
# scripts/bench.sh peers --scaling; see docs/benchmarks.md.
#
# scripts/bench.sh ab [--system shoal] [--tasks N] [--rounds R] [--processes N] name=binary name=binary ... runs
# Shoal builds side by side through peers.py, alternating one round at a time (bench/peers/ab.py).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ "${1:-}" = peers ]; then
  shift
  cargo build --release --locked -p shoal >&2
  exec python3 bench/peers/peers.py "$@"
fi
if [ "${1:-}" = ab ]; then
  shift
  exec python3 bench/peers/ab.py "$@"
fi
pgdir="$root/target/bench-pg"
trap 'scripts/pg.sh stop "$pgdir" || true' EXIT
scripts/pg.sh stop "$pgdir" 2>/dev/null || true
rm -rf "$pgdir"
url=$(scripts/pg.sh start "$pgdir")
cargo build --release --locked -p shoal-bench >&2
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); $(psql "$url" -Atc 'show server_version') fsync=$(psql "$url" -Atc 'show fsync')" >&2
target/release/shoal-bench "$@" --database-url "$url"
