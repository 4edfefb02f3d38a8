#!/usr/bin/env bash
# Fifty pods, simulated: 50 `shoal worker` processes (2 task slots and a pool of
# --pool connections each) against one PostgreSQL on this machine drain one job, first on the
# SQL queue, then on SQS (moto_server). A fifth of the workers get SIGTERM mid-job, as
# Kubernetes sends when it scales a Deployment down. Then, from the event log:
#   - every task has exactly one TaskCompleted, and no task failed;
#   - the job has its JobCompleted;
#   - the peak number of server connections (pg_stat_activity, sampled every 200 ms) stays
#     within the bound docs/deploy.md gives for these settings;
#   - every terminated worker exited cleanly within its grace period.
#
#   scripts/fifty-workers.sh             the short form (CI): 2,000 tasks on SQL, 300 on SQS
#   scripts/fifty-workers.sh --long      20,000 tasks on SQL, 2,000 on SQS
#   options: --workers N (50) --concurrency N (2) --pool N (2) --sql-tasks N --sqs-tasks N
#            --task-seconds S (io_bound duration per task) --only sql|sqs
#
# It builds nothing: it runs $SHOAL_BIN (default target/debug/shoal). It starts a throwaway
# Postgres with scripts/pg.sh (data under target/fifty-pg) and, for SQS, a moto_server on a free
# loopback port; it stops them and every process it started when it ends. Logs of every
# process are kept under target/fifty-workers/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

workers=50 concurrency=2 pool=2 sql_tasks=2000 sqs_tasks=300 task_seconds=0.5 only=""
long=0
while [ $# -gt 0 ]; do
  case "$1" in
    --long) long=1; sql_tasks=20000; sqs_tasks=2000 ;;
    --workers) workers=$2; shift ;;
    --concurrency) concurrency=$2; shift ;;
    --pool) pool=$2; shift ;;
    --sql-tasks) sql_tasks=$2; shift ;;
    --sqs-tasks) sqs_tasks=$2; shift ;;
    --task-seconds) task_seconds=$2; shift ;;
    --only) only=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

bin=${SHOAL_BIN:-$root/target/debug/shoal}
[ -x "$bin" ] || { echo "no shoal binary at $bin: build it (cargo build --bin shoal) or set SHOAL_BIN" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql is missing: apt-get install postgresql-client-15" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is missing: apt-get install curl" >&2; exit 1; }

logdir=$root/target/fifty-workers
pgdir=$root/target/fifty-pg
rm -rf "$logdir"; mkdir -p "$logdir"

pids=()          # every process this script started, stopped at exit
moto_pid=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "$moto_pid" ] && { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; }
  scripts/pg.sh stop "$pgdir" || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
say() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

scripts/pg.sh stop "$pgdir" 2>/dev/null || true
rm -rf "$pgdir"
server=$(scripts/pg.sh start "$pgdir")
say "Postgres at $server (max_connections $(psql "$server" -Atc 'SHOW max_connections'))"

# run_one NAME QUEUE TASKS: one job of TASKS io_bound tasks through 50 workers on QUEUE
# (`sql` or an SQS queue URL), on a fresh database NAME.
run_one() {
  local name=$1 queue=$2 tasks=$3
  local db="${server%/*}/$name" dir="$logdir/$name"
  mkdir -p "$dir"
  psql "$server" -qc "CREATE DATABASE $name" >/dev/null
  "$bin" migrate --database-url "$db" 2>"$dir/migrate.log"
  local started=("${pids[@]}")
  local api_port metrics_port
  api_port=$(free_port); metrics_port=$(free_port)

  export SHOAL_DATABASE_URL=$db SHOAL_QUEUE=$queue RUST_LOG=warn
  "$bin" orchestrator --metrics-listen "127.0.0.1:$metrics_port" --database-max-connections 4 \
    2>"$dir/orchestrator.log" & pids+=($!)
  "$bin" serve --listen "127.0.0.1:$api_port" --database-max-connections 4 \
    2>"$dir/serve.log" & pids+=($!)
  local worker_pids=()
  for i in $(seq 1 "$workers"); do
    "$bin" worker --concurrency "$concurrency" --database-max-connections "$pool" \
      --grace-period-seconds 20 --worker-id "w$i" 2>"$dir/worker-$i.log" &
    worker_pids+=($!); pids+=($!)
  done
  unset SHOAL_DATABASE_URL SHOAL_QUEUE RUST_LOG

  local deadline=$((SECONDS + 60))
  until curl -sf "http://127.0.0.1:$api_port/health" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "shoal serve did not come up (see $dir/serve.log)" >&2; return 1; }
    sleep 0.2
  done
  # Wait until every worker is up (each prints its start line), so the count below is real.
  deadline=$((SECONDS + 120))
  until [ "$(grep -l 'running up to' "$dir"/worker-*.log 2>/dev/null | wc -l)" -ge "$workers" ]; do
    [ $SECONDS -lt $deadline ] || { echo "not all $workers workers started (see $dir)" >&2; return 1; }
    sleep 0.5
  done
  say "$name: $workers workers (concurrency $concurrency, pool $pool) on the $([ "$queue" = sql ] && echo SQL || echo SQS) queue; submitting $tasks tasks of ${task_seconds}s"

  # Peak server connections to this database, sampled until the job ends.
  local peakfile="$dir/peak-connections"
  (
    peak=0
    while :; do
      n=$(psql "$server" -Atc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$name'" 2>/dev/null || echo 0)
      [ "$n" -gt "$peak" ] && { peak=$n; echo "$peak" >"$peakfile"; }
      sleep 0.2
    done
  ) & local sampler=$!
  pids+=($sampler)

  local t0=$SECONDS
  local body job
  body=$(printf '{"query":"mutation($i: SubmitJobInput!) { submitJob(input: $i) { id } }","variables":{"i":{"jobType":"io_bound","totalTasks":%d,"parameters":{"work_duration_seconds":%s}}}}' "$tasks" "$task_seconds")
  job=$(curl -sf "http://127.0.0.1:$api_port/graphql" -H 'content-type: application/json' -d "$body" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["submitJob"]["id"])')
  say "$name: job $job submitted"

  q() { psql "$db" -Atc "$1"; }
  completed() { q "SELECT count(*) FROM events WHERE event_type = 'TaskCompleted'"; }

  # Scale down mid-job: SIGTERM a fifth of the workers two seconds after the first tasks
  # completed (a count threshold would be read too late on a busy machine).
  local stop_count=$((workers / 5))
  deadline=$((SECONDS + 600))
  until [ "$(completed)" -ge 1 ]; do
    [ $SECONDS -lt $deadline ] || { echo "$name: no task completed in time" >&2; return 1; }
    sleep 0.2
  done
  sleep 2
  local stopped=("${worker_pids[@]:0:$stop_count}")
  kill -TERM "${stopped[@]}"
  local done_at_stop in_flight
  done_at_stop=$(completed)
  in_flight=$(q "SELECT (SELECT count(*) FROM events WHERE event_type = 'TaskStarted') - $done_at_stop")
  say "$name: SIGTERM to $stop_count workers with $done_at_stop/$tasks tasks done and $in_flight started but not finished"
  local bad_exit=0
  for pid in "${stopped[@]}"; do
    if ! wait "$pid"; then bad_exit=$((bad_exit + 1)); fi
  done
  # Each worker prints its counters when it stops: what the stopped ones finished in their
  # grace period, and released for the others.
  local stopped_stats
  stopped_stats=$(for i in $(seq 1 "$stop_count"); do grep -h 'shoal worker stopped' "$dir/worker-$i.log" || true; done \
    | python3 -c 'import re, sys
t = sys.stdin.read()
def total(k): return sum(int(x) for x in re.findall(k + r": (\d+)", t))
print("completed", total("completed"), "and released", total("released"), "tasks")')
  say "$name: the $stop_count terminated workers exited ($bad_exit with an error) after $((SECONDS - t0))s; between them they $stopped_stats"

  deadline=$((SECONDS + 900))
  until [ "$(q "SELECT count(*) FROM events WHERE stream_id = 'job-$job' AND event_type IN ('JobCompleted', 'JobFailed')")" -ge 1 ]; do
    [ $SECONDS -lt $deadline ] || { echo "$name: the job did not end in time ($(completed)/$tasks done)" >&2; return 1; }
    sleep 0.5
  done
  local elapsed=$((SECONDS - t0))
  kill "$sampler" 2>/dev/null || true

  # The checks, all from the log.
  local distinct total dupes failed ended peak bound
  distinct=$(q "SELECT count(DISTINCT stream_id) FROM events WHERE event_type = 'TaskCompleted'")
  total=$(completed)
  dupes=$(q "SELECT count(*) FROM (SELECT stream_id FROM events WHERE event_type = 'TaskCompleted' GROUP BY stream_id HAVING count(*) > 1) d")
  failed=$(q "SELECT count(*) FROM events WHERE event_type IN ('TaskFailed', 'TaskDeadLettered')")
  ended=$(q "SELECT event_type FROM events WHERE stream_id = 'job-$job' AND event_type IN ('JobCompleted', 'JobFailed')")
  peak=$(cat "$peakfile" 2>/dev/null || echo 0)
  # docs/deploy.md: a worker holds at most its pool plus two notifier connections; serve and
  # the orchestrator (pool 4 each) the same, the orchestrator one more for its leader lock;
  # one for the sampler's own query.
  bound=$((workers * (pool + 2) + 2 * (4 + 2) + 1 + 1))
  say "$name: job $ended in ${elapsed}s; TaskCompleted $total for $distinct distinct tasks of $tasks ($dupes twice), $failed failed"
  say "$name: peak connections $peak (bound $bound = $workers x (pool $pool + 2) + serve and orchestrator)"

  local ok=1
  [ "$done_at_stop" -lt "$tasks" ] || { echo "FAIL $name: the job was done before the scale-down; give it more tasks" >&2; ok=0; }
  [ "$ended" = JobCompleted ] || { echo "FAIL $name: the job ended with '$ended', not JobCompleted" >&2; ok=0; }
  [ "$distinct" = "$tasks" ] && [ "$total" = "$tasks" ] || { echo "FAIL $name: $total TaskCompleted for $distinct of $tasks tasks" >&2; ok=0; }
  [ "$dupes" = 0 ] || { echo "FAIL $name: $dupes tasks completed twice" >&2; ok=0; }
  [ "$failed" = 0 ] || { echo "FAIL $name: $failed tasks failed or were dead-lettered" >&2; ok=0; }
  [ "$bad_exit" = 0 ] || { echo "FAIL $name: $bad_exit terminated workers exited with an error (see $dir)" >&2; ok=0; }
  [ "$peak" -le "$bound" ] || { echo "FAIL $name: $peak connections, more than the bound $bound" >&2; ok=0; }

  # Stop this run's processes (the remaining workers drain), and the database with them.
  for pid in "${pids[@]}"; do
    case " ${started[*]} " in *" $pid "*) ;; *) kill -TERM "$pid" 2>/dev/null || true ;; esac
  done
  for pid in "${pids[@]}"; do
    case " ${started[*]} " in *" $pid "*) ;; *) wait "$pid" 2>/dev/null || true ;; esac
  done
  pids=("${started[@]}")
  [ "$ok" = 1 ]
}

failures=0
if [ "$only" != sqs ]; then
  run_one fifty_sql sql "$sql_tasks" || failures=$((failures + 1))
fi
if [ "$only" != sql ]; then
  command -v moto_server >/dev/null || { echo "moto_server is missing: pip install 'moto[server]'" >&2; exit 1; }
  moto_port=$(free_port)
  moto_server -H 127.0.0.1 -p "$moto_port" >"$logdir/moto.log" 2>&1 & moto_pid=$!
  export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=fifty AWS_SECRET_ACCESS_KEY=fifty AWS_EC2_METADATA_DISABLED=true
  unset AWS_PROFILE
  deadline=$((SECONDS + 60))
  until curl -s "$AWS_ENDPOINT_URL" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "moto_server did not start (see $logdir/moto.log)" >&2; exit 1; }
    sleep 0.2
  done
  queue_url=$("$bin" sqs init --name fifty --max-receives 5 2>/dev/null | tail -1)
  say "SQS queue (moto) $queue_url"
  run_one fifty_sqs "$queue_url" "$sqs_tasks" || failures=$((failures + 1))
fi

if [ "$failures" -gt 0 ]; then
  echo "fifty workers: $failures run(s) failed; logs in $logdir" >&2
  exit 1
fi
say "fifty workers: every task completed exactly once, nothing lost to SIGTERM$([ $long = 1 ] && echo ' (long form)')"
