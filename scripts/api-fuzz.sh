#!/usr/bin/env bash
# Schema-driven fuzzing of Shoal's HTTP APIs with schemathesis 4, against a real `shoal dev`
# (a throwaway SQLite database, a free loopback port): the REST API against its own OpenAPI
# document (`/openapi.json`), GraphQL against its own schema (`/graphql`). It keeps the document
# true: a response that does not match it, a request it allows that the API refuses, a request
# it forbids that the API accepts, or a server error fails the run.
#
#   1. Rejected requests change nothing: schemathesis sends only requests its document forbids
#      (REST and GraphQL, `--mode negative`); every one must be refused, and the event log must
#      hold exactly as many events afterwards as before.
#   2. Everything: valid and invalid requests, REST operations chained by their links (submit a
#      job, read it, read its tasks, report them running/complete/failed), GraphQL queries and
#      mutations; `--checks all`.
#
# Repeatable: a fixed seed, a bounded number of examples per operation, no example database.
#   SHOAL_BIN            the binary (default target/debug/shoal; built if missing)
#   SHOAL_FUZZ_SEED      the seed (default 20251206)
#   SHOAL_FUZZ_EXAMPLES  examples per operation and phase (default 25)
# Reports (JUnit) go to target/api-fuzz/. schemathesis 4 is installed into target/api-fuzz/venv
# from PyPI when `st` is missing or another version.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seed=${SHOAL_FUZZ_SEED:-20251206}
examples=${SHOAL_FUZZ_EXAMPLES:-25}
out="$root/target/api-fuzz"
mkdir -p "$out"

step() { printf '\n==> %s\n' "$*"; }

# schemathesis 4, from PyPI.
st=st
if ! command -v st >/dev/null || ! st --version 2>/dev/null | grep -q 'version 4\.'; then
  if [ ! -x "$out/venv/bin/st" ] || ! "$out/venv/bin/st" --version | grep -q 'version 4\.'; then
    step "installing schemathesis 4 into target/api-fuzz/venv (pip)"
    python3 -m venv "$out/venv"
    "$out/venv/bin/pip" install --quiet 'schemathesis>=4,<5'
  fi
  st="$out/venv/bin/st"
fi
echo "$("$st" --version)"

bin=${SHOAL_BIN:-$root/target/debug/shoal}
if [ ! -x "$bin" ]; then
  step "building target/debug/shoal"
  cargo build --locked --bin shoal
fi

work=$(mktemp -d)
dev_pid=
cleanup() {
  if [ -n "$dev_pid" ]; then
    kill "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
db="$work/fuzz.db"
# No in-process workers: tasks stay where the fuzzer's own reports (running, complete, failed)
# put them, so a run does the same work every time. A small task limit keeps the jobs it submits
# small (the document announces the limit: the fuzzer submits jobs right up to it).
step "shoal dev on $base (SQLite $db)"
RUST_LOG=${RUST_LOG:-warn} "$bin" dev --listen "127.0.0.1:$port" --database-url "sqlite:$db" \
  --workers 0 --max-tasks-per-job 20 >"$out/shoal-dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 300); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  kill -0 "$dev_pid" 2>/dev/null || { cat "$out/shoal-dev.log" >&2; echo "shoal dev exited" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "$base/health" >/dev/null

events() {
  python3 - "$db" <<'EOF'
import sqlite3, sys
connection = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(connection.execute("SELECT count(*) FROM events").fetchone()[0])
EOF
}

export SCHEMATHESIS_HOOKS="$root/scripts/api_fuzz_hooks.py"
# NUL characters are refused anywhere in a body (422): JSON Schema cannot say so of every
# string inside an object, so the document says it in words and the fuzzer is told.
common=(--seed "$seed" --max-examples "$examples" --generation-database none --no-color
  --workers 1 --request-timeout 10 --generation-allow-x00 false)
# GraphQL arguments have rules its schema cannot state (an ID is a UUID, `first` is 1..100), so
# a refused request is not a fault there; the hooks file's check replaces the server-error check
# (see scripts/api_fuzz_hooks.py).
graphql_checks=(--checks all --exclude-checks not_a_server_error,positive_data_acceptance)

failed=0
run() {
  local name=$1
  shift
  step "schemathesis: $name"
  # From target/api-fuzz/: schemathesis keeps a cache in its working directory.
  if ! (cd "$out" && "$st" run "$@" "${common[@]}" --report junit --report-junit-path "$out/$name.xml"); then
    echo "schemathesis: $name FAILED" >&2
    failed=1
  fi
}

before=$(events)
run rest-rejected "$base/openapi.json" --mode negative --checks all --phases examples,coverage,fuzzing
run graphql-rejected "$base/graphql" --mode negative "${graphql_checks[@]}"
after=$(events)
step "events appended by rejected requests: $((after - before))"
if [ "$after" != "$before" ]; then
  echo "rejected requests appended $((after - before)) events ($before before, $after after)" >&2
  failed=1
fi

run rest "$base/openapi.json" --checks all
run graphql "$base/graphql" "${graphql_checks[@]}"

if ! kill -0 "$dev_pid" 2>/dev/null; then
  echo "shoal dev died during the run (log: target/api-fuzz/shoal-dev.log)" >&2
  failed=1
fi
if [ "$failed" != 0 ]; then
  echo "api-fuzz: FAILED (seed $seed, $examples examples; reports in target/api-fuzz/)" >&2
  exit 1
fi
echo "api-fuzz: passed (seed $seed, $examples examples)"
