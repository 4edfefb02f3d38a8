#!/usr/bin/env bash
# Runs Shoal on this machine: builds the dashboard and the `shoal` binary (release), then
# `shoal dev` (embedded SQLite, SQL queue, in-process workers, APIs and dashboard on one port).
# This is the README's run command. Arguments are passed to `shoal dev` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
. scripts/c-toolchain.sh
if [ -f web/package.json ]; then
  if command -v npm >/dev/null; then
    if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules ]; then
      echo "==> installing the dashboard's npm packages" >&2
      npm --prefix web ci --no-audit --no-fund >&2
    fi
    echo "==> building the dashboard" >&2
    npm --prefix web run build >&2
  else
    echo "npm is missing, so the dashboard is not built (apt-get install nodejs npm); the APIs still run" >&2
  fi
fi
echo "==> building shoal (release; the first build takes several minutes)" >&2
cargo build --release --locked --bin shoal >&2
exec target/release/shoal dev "$@"
