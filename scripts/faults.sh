#!/usr/bin/env bash
# Fault injection: two jobs run through separate `shoal` processes (3 workers, a projector, an
# orchestrator), one of io_bound tasks and a smaller one whose tasks' first attempt fails for a
# fifth of them (so that retries run too), while, at random points of their progress, a seeded
# plan SIGKILLs a worker, the projector or the orchestrator (each restarted after a random
# pause, as Kubernetes would) and restarts PostgreSQL (fast shutdown, a random outage, start on
# the same port). First on the SQL queue (Postgres), then on SQS (moto_server), where moto is
# also restarted once. At the end:
#   - both jobs ended, and every task is terminal in the log (COMPLETED, or FAILED for good);
#   - every started attempt has exactly one end (TaskCompleted or TaskFailed), no end lacks its
#     start, no attempt started twice, no task completed twice; exactly the planned attempts
#     failed (--flaky), and each was retried once;
#   - each job's counts (read table `jobs`, the orchestrator's `orchestrator_jobs`) and the
#     analytics' task counts equal the tasks' states (read table `tasks`), which equal the log;
#   - every read table (jobs, tasks, analytics_*) equals a full replay of the log
#     (`shoal projector rebuild`, compared row for row);
#   - no process is wedged: after each restart of Postgres or moto every process is ready again
#     within 30 s; at the end each answers /health/ready within 10 s, the orchestrator leads,
#     and each stops on SIGTERM within 20 s; a process that exited on its own fails the run.
#
#   scripts/faults.sh                 the short form (CI): 10,000 + 500 tasks and 20 faults on
#                                     the SQL queue; 150 + 30 tasks, 6 faults and a moto restart
#                                     on SQS
#   scripts/faults.sh --seed N        the same faults as the run that printed seed N (add the
#                                     other options that run had, e.g. --long)
#   scripts/faults.sh --long          10,000 + 2,000 tasks of 0.5 s and 60 faults on SQL,
#                                     1,000 + 200 tasks and 20 faults on SQS (10 to 15 minutes)
#   options: --only sql|sqs --tasks N --faults N --sqs-tasks N --sqs-faults N
#            --task-seconds S (how long a task runs, 0.2) --concurrency N (slots per worker, 12)
#            --flaky-tasks N --sqs-flaky-tasks N (500, 30: the tasks of a second job, run by a
#            program whose first attempt fails for --flaky P % of them, 20)
#            --moto-restart before|mid (default before: moto restarts while every process runs
#            and before the jobs' messages exist; mid: at a random point of the jobs, the queue
#            recreated empty, which relies on the orchestrator re-relaying lost messages)
#            --end-timeout S (how long the jobs may take to end after the last fault, 240)
#
# The seed is printed first. The plan (which fault, at what share of the tasks done, how long
# the outage) is a function of the seed alone; the timing of the processes is not, so a seed
# replays the same faults at the same points of progress, not the same interleaving.
#
# It builds nothing: it runs $SHOAL_BIN (default target/debug/shoal). It starts a throwaway
# Postgres with scripts/pg.sh (data under target/faults-pg) and, for SQS, a moto_server on a
# free loopback port; it stops them and every process it started when it ends. Logs of every
# process (appended across restarts) and the read-table dumps are kept under target/faults/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

args=("$@")
seed="" only="" long=0
tasks=10000 faults=20 sqs_tasks=150 sqs_faults=6
task_seconds=0.2 concurrency=12 moto_restart=before end_timeout=240
flaky=20 flaky_tasks=500 sqs_flaky_tasks=30
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed=$2; shift ;;
    --long) long=1; faults=60; task_seconds=0.5; sqs_tasks=1000; sqs_faults=20; flaky_tasks=2000; sqs_flaky_tasks=200 ;;
    --only) only=$2; shift ;;
    --tasks) tasks=$2; shift ;;
    --faults) faults=$2; shift ;;
    --sqs-tasks) sqs_tasks=$2; shift ;;
    --sqs-faults) sqs_faults=$2; shift ;;
    --task-seconds) task_seconds=$2; shift ;;
    --flaky) flaky=$2; shift ;;
    --flaky-tasks) flaky_tasks=$2; shift ;;
    --sqs-flaky-tasks) sqs_flaky_tasks=$2; shift ;;
    --concurrency) concurrency=$2; shift ;;
    --moto-restart) moto_restart=$2; shift ;;
    --end-timeout) end_timeout=$2; shift ;;
    -h|--help) sed -n '2,44p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$moto_restart" in before|mid) ;; *) echo "--moto-restart before|mid" >&2; exit 2 ;; esac
case "$only" in ""|sql|sqs) ;; *) echo "--only sql|sqs" >&2; exit 2 ;; esac
[[ "$flaky" =~ ^[0-9]+$ ]] && [ "$flaky" -le 100 ] || { echo "--flaky takes a percentage, 0 to 100" >&2; exit 2; }
[[ "$seed" =~ ^[0-9]+$ ]] || seed=$(( (RANDOM << 15 | RANDOM) % 1000000 ))

# The seed first, and how to run these faults again.
replay=()
skip=0
for a in "${args[@]}"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  [ "$a" = --seed ] && { skip=1; continue; }
  replay+=("$a")
done
echo "fault suite seed: $seed  (replay: scripts/faults.sh --seed $seed${replay[*]:+ ${replay[*]}})"

bin=${SHOAL_BIN:-$root/target/debug/shoal}
[ -x "$bin" ] || { echo "no shoal binary at $bin: build it (cargo build --bin shoal) or set SHOAL_BIN" >&2; exit 1; }
for tool in psql curl python3; do
  command -v $tool >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done

logdir=$root/target/faults
pgdir=$root/target/faults-pg
rm -rf "$logdir"; mkdir -p "$logdir"
export PGCONNECT_TIMEOUT=5

# The second job's program (the `exec` handler gives it the task as JSON on stdin): the first
# attempt of the tasks whose index is below $flaky modulo 100 fails, so that retries run under
# the faults too; every other attempt sleeps $task_seconds and succeeds.
cat >"$logdir/flaky-task.sh" <<EOF
#!/bin/sh
read -r task
attempt=\${task#*\"attempt\":}; attempt=\${attempt%%[,\}]*}
index=\${task#*\"task_index\":}; index=\${index%%[,\}]*}
if [ "\$attempt" = 1 ] && [ \$((index % 100)) -lt $flaky ]; then
  echo "planned failure of the first attempt of task \$index" >&2
  exit 1
fi
exec sleep $task_seconds
EOF
chmod +x "$logdir/flaky-task.sh"

say() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------------------------------------
# Processes: each role of a scenario by name, restarted like a Deployment would.

declare -A pid=()      # role -> pid of its current process
declare -A cmd=()      # role -> its command line (split on spaces: no path may hold one)
declare -A ours=()     # role -> 1 while it is down because this script killed it
unexpected=()          # "role: code" of processes that exited on their own
moto_pid="" moto_port=""
aux_pids=()

cleanup() {
  for r in "${!pid[@]}"; do kill -KILL "${pid[$r]}" 2>/dev/null || true; done
  for p in "${aux_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  [ -n "$moto_pid" ] && { kill -KILL "$moto_pid" 2>/dev/null || true; }
  wait 2>/dev/null || true
  scripts/pg.sh stop "$pgdir" >/dev/null 2>&1 || true
}
trap cleanup EXIT

start_role() {
  local role=$1
  # shellcheck disable=SC2086
  ${cmd[$role]} >>"$dir/$role.log" 2>&1 &
  pid[$role]=$!
  ours[$role]=0
}

kill_role() {
  local role=$1
  ours[$role]=1
  kill -KILL "${pid[$role]}" 2>/dev/null || true
  wait "${pid[$role]}" 2>/dev/null || true
}

# Restarts every role whose process ended on its own (noted), as a Deployment would.
supervise() {
  local role code
  for role in "${!pid[@]}"; do
    if ! kill -0 "${pid[$role]}" 2>/dev/null; then
      code=0; wait "${pid[$role]}" 2>/dev/null || code=$?
      if [ "${ours[$role]}" != 1 ]; then
        unexpected+=("$role: exit $code at $(date +%T)")
        say "  $role exited on its own (code $code, see $dir/$role.log); restarting it"
      fi
      start_role "$role"
    fi
  done
}

# Waits until every role answers /health/ready (restarting those that exited); prints the
# seconds it took, or fails after 30 s (a wedged process).
all_ready() {
  local t=$SECONDS role
  for role in "${!ready_url[@]}"; do
    until curl -sf -m 5 "${ready_url[$role]}" >/dev/null; do
      if [ $((SECONDS - t)) -ge 30 ]; then echo "$role not ready after 30s"; return 1; fi
      supervise; sleep 0.2
    done
  done
  echo "$((SECONDS - t))s"
}

# ---------------------------------------------------------------------------------------------
# Postgres, restarted on the same port with the same options.

find_pgbin() {
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u shoal-pg -- "$@"; else "$@"; fi; }

scripts/pg.sh stop "$pgdir" 2>/dev/null || true
rm -rf "$pgdir"
server=$(scripts/pg.sh start "$pgdir")
pgbin=$(find_pgbin)
pgdata=$(cat "$pgdir/datadir")
# postmaster.opts holds the command line it was started with: the same port and settings.
pgopts=$(cut -d' ' -f2- "$pgdata/postmaster.opts")
say "Postgres at $server"

# CPU seconds Postgres used (its postmaster and the backends it reaped), summed over restarts.
pg_cpu_done=0
pg_cpu() {
  local p
  p=$(head -1 "$pgdata/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($14 + $15 + $16 + $17) / hz }' "/proc/$p/stat" 2>/dev/null || echo 0
}
pg_stop() {
  pg_cpu_done=$((pg_cpu_done + $(pg_cpu)))
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -m fast -w -t 60 stop >/dev/null
}
pg_start() {
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 -o "$pgopts" start >/dev/null
}

# ---------------------------------------------------------------------------------------------
# moto_server, restarted on the same port (it loses every queue when it stops).

moto_start() {
  moto_server -H 127.0.0.1 -p "$moto_port" >>"$logdir/moto.log" 2>&1 &
  moto_pid=$!
  local deadline=$((SECONDS + 60))
  until curl -s "http://127.0.0.1:$moto_port" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "moto_server did not start (see $logdir/moto.log)" >&2; exit 1; }
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------
# The plan: a function of the seed and the scenario only.

# plan NAME FAULTS KINDS...: lines "SHARE KIND TARGET OUTAGE", SHARE the fraction of tasks done
# at which the fault strikes, in order; each kind at least twice (once in a short plan).
plan() {
  python3 - "$seed" "$@" <<'EOF'
import random, sys
seed, name, n, kinds = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
r = random.Random(f"{seed}/{name}")
once = [k for k in kinds if k == "moto"]
each = [k for k in kinds if k != "moto"]
reps = 2 if n >= 2 * len(each) + len(once) else 1
chosen = once + [k for k in each for _ in range(reps)]
weights = {"worker": 4, "projector": 2, "orchestrator": 2, "postgres": 2}
while len(chosen) < n:
    chosen.append(r.choices(each, [weights[k] for k in each])[0])
r.shuffle(chosen)
for share, kind in zip(sorted(r.uniform(0.0, 0.95) for _ in chosen), chosen):
    target = f"worker{r.randint(1, 3)}" if kind == "worker" else kind
    outage = r.uniform(0.5, 4.0) if kind in ("postgres", "moto") else r.uniform(0.0, 3.0)
    print(f"{share:.4f} {kind} {target} {outage:.2f}")
EOF
}

# ---------------------------------------------------------------------------------------------
# One scenario.

q() { psql "$db" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
# Tasks terminal in the log so far (-1 while the database does not answer).
terminal_count() {
  q "SELECT count(*) FROM events WHERE event_type = 'TaskCompleted'
       OR (event_type = 'TaskFailed' AND (data->>'final_failure')::boolean)" 2>/dev/null || echo -1
}
# The jobs' endings, one word each in the order of $job_ids ("none" for a job that has not ended).
job_ends() {
  local j out=""
  for j in "${job_ids[@]}"; do
    out+="$(q "SELECT coalesce(string_agg(event_type, '+'), 'none') FROM events WHERE stream_id = 'job-$j'
                 AND event_type IN ('JobCompleted', 'JobFailed')" 2>/dev/null || echo none) "
  done
  echo "${out% }"
}

# What is not terminal, from the log and the queue: printed when a job is stuck.
diagnose() {
  say "  diagnosis ($name): last event of each task stream that is not terminal:"
  q "WITH last AS (SELECT DISTINCT ON (stream_id) stream_id, event_type, data
                     FROM events WHERE stream_id LIKE 'task-%' ORDER BY stream_id, stream_version DESC)
     SELECT '    ' || event_type || ': ' || count(*) || ' (e.g. ' || min(stream_id) || ')' FROM last
     WHERE NOT (event_type IN ('TaskCompleted', 'TaskDeadLettered')
                OR (event_type = 'TaskFailed' AND (data->>'final_failure')::boolean))
     GROUP BY event_type" || true
  if [ "$queue_kind" = sql ]; then
    q "SELECT '    SQL queue: ' || count(*) || ' messages, max receive count ' || coalesce(max(receive_count), 0) FROM task_queue" || true
    q "SELECT '    dead letters: ' || count(*) || coalesce(' (' || min(reason) || ')', '') FROM task_dead_letters" || true
  fi
  if [ "$queue_kind" = sqs ]; then
    # Where the messages are: a task stuck with none anywhere lost its message.
    python3 - "$AWS_ENDPOINT_URL" <<'EOF' || true
import os, sys, boto3
sqs = boto3.client("sqs", endpoint_url=sys.argv[1], region_name=os.environ.get("AWS_REGION", "us-east-1"))
for url in sqs.list_queues().get("QueueUrls", []):
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    print(f"    {url.rsplit('/', 1)[-1]}: {a.get('ApproximateNumberOfMessages')} visible, "
          f"{a.get('ApproximateNumberOfMessagesNotVisible')} in flight, "
          f"{a.get('ApproximateNumberOfMessagesDelayed')} delayed")
EOF
  fi
  say "  read table jobs: $(q "SELECT status || ' created ' || created || ' queued ' || queued || ' running ' || running || ' completed ' || completed || ' failed ' || failed || ' retrying ' || retrying FROM jobs" 2>/dev/null || true)"
}

# The read tables, one file each, rows in key order.
dump_read_tables() {
  local out=$1 t
  mkdir -p "$out"
  for t in $(q "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'
                  AND (table_name IN ('jobs', 'tasks') OR table_name LIKE 'analytics\_%')
                  AND table_name NOT LIKE '%rebuild%' ORDER BY 1"); do
    q "COPY (SELECT * FROM $t ORDER BY 1) TO STDOUT" >"$out/$t.tsv"
  done
}

# run_scenario NAME QUEUE_KIND TASKS FLAKY_TASKS FAULTS: a job of TASKS io_bound tasks and one
# of FLAKY_TASKS tasks of flaky-task.sh on a fresh database NAME, through the SQL queue or SQS
# (`sqs`), with FAULTS faults.
run_scenario() {
  name=$1 queue_kind=$2
  local nmain=$3 nflaky=$4 nfaults=$5
  local ntasks=$((nmain + nflaky))
  dir="$logdir/$name"; mkdir -p "$dir"
  db="${server%/*}/$name"
  local fail=() t0=$SECONDS
  psql "$server" -qc "CREATE DATABASE $name" >/dev/null
  "$bin" migrate --database-url "$db" 2>"$dir/migrate.log"

  local queue=sql kinds=(worker projector orchestrator postgres)
  if [ "$queue_kind" = sqs ]; then
    queue=$("$bin" sqs init --name "$name" --max-receives 5 2>>"$dir/sqs-init.log" | tail -1)
    [ "$moto_restart" = mid ] && kinds+=(moto)
  fi
  plan "$name" "$nfaults" "${kinds[@]}" >"$dir/plan"
  nfaults=$(wc -l <"$dir/plan")
  [ "$queue_kind" = sqs ] && [ "$moto_restart" = before ] && nfaults=$((nfaults + 1))

  local orch_port proj_port role
  orch_port=$(free_port); proj_port=$(free_port)
  declare -gA ready_url=()
  for role in "${!pid[@]}"; do kill -KILL "${pid[$role]}" 2>/dev/null || true; done
  pid=() cmd=() ours=() unexpected=()
  export SHOAL_DATABASE_URL=$db SHOAL_QUEUE=$queue RUST_LOG=${RUST_LOG:-warn}
  cmd[orchestrator]="$bin orchestrator --metrics-listen 127.0.0.1:$orch_port --database-max-connections 4"
  ready_url[orchestrator]="http://127.0.0.1:$orch_port/health/ready"
  cmd[projector]="$bin projector run --admin-listen 127.0.0.1:$proj_port --database-max-connections 4"
  ready_url[projector]="http://127.0.0.1:$proj_port/health/ready"
  local i port
  for i in 1 2 3; do
    port=$(free_port)
    cmd[worker$i]="$bin worker --exec task=$logdir/flaky-task.sh --worker-id w$i --concurrency $concurrency --visibility-timeout-seconds 5 --grace-period-seconds 5 --admin-listen 127.0.0.1:$port --database-max-connections 4"
    ready_url[worker$i]="http://127.0.0.1:$port/health/ready"
  done
  for role in orchestrator projector worker1 worker2 worker3; do start_role "$role"; done

  local deadline=$((SECONDS + 120))
  for role in "${!ready_url[@]}"; do
    until curl -sf -m 5 "${ready_url[$role]}" >/dev/null; do
      [ $SECONDS -lt $deadline ] || { echo "FAIL $name: $role did not get ready (see $dir/$role.log)" >&2; return 1; }
      supervise; sleep 0.3
    done
  done
  say "$name: orchestrator, projector and 3 workers ($concurrency slots each) ready on the $queue_kind queue"

  local faults_done=0 kinds_done=""
  if [ "$queue_kind" = sqs ] && [ "$moto_restart" = before ]; then
    # Every process runs and polls; the queue is empty, so moto loses nothing but the queue
    # itself, which is created again (the same URL) once moto is back.
    local outage
    outage=$(python3 -c "import random; print(f'{random.Random(\"$seed/$name/moto\").uniform(2, 5):.2f}')")
    say "  fault 1/$nfaults before the job: moto_server killed, back in ${outage}s with its queues gone, then created again"
    kill -KILL "$moto_pid"; wait "$moto_pid" 2>/dev/null || true
    sleep "$outage"; moto_start
    "$bin" sqs init --name "$name" --max-receives 5 >/dev/null 2>>"$dir/sqs-init.log"
    ready=$(all_ready) || fail+=("after moto restarted: $ready")
    say "    every process ready again after $ready"
    faults_done=1 kinds_done="moto"
  fi

  # Submit through a short-lived `shoal serve` (it projects too while it runs: stopped at once,
  # so that the projector under test is the only one).
  local api_port
  api_port=$(free_port)
  "$bin" serve --listen "127.0.0.1:$api_port" --database-max-connections 4 >>"$dir/serve.log" 2>&1 &
  local serve_pid=$!
  aux_pids+=("$serve_pid")
  deadline=$((SECONDS + 60))
  until curl -sf "http://127.0.0.1:$api_port/health" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "FAIL $name: shoal serve did not come up (see $dir/serve.log)" >&2; return 1; }
    sleep 0.2
  done
  submit() {
    curl -sf "http://127.0.0.1:$api_port/graphql" -H 'content-type: application/json' \
      -d "{\"query\":\"mutation(\$i: SubmitJobInput!) { submitJob(input: \$i) { id } }\",\"variables\":{\"i\":$1}}" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["submitJob"]["id"])'
  }
  # A short timeout (the tasks take $task_seconds): what lingers past it is overdue.
  job_ids=("$(submit "{\"jobType\":\"io_bound\",\"totalTasks\":$nmain,\"timeoutSeconds\":30,\"parameters\":{\"work_duration_seconds\":$task_seconds}}")")
  [ "$nflaky" -gt 0 ] && job_ids+=("$(submit "{\"jobType\":\"exec\",\"totalTasks\":$nflaky,\"timeoutSeconds\":30,\"parameters\":{\"command\":\"task\"}}")")
  kill -TERM "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
  say "$name: jobs submitted: ${job_ids[0]} of $nmain io_bound tasks of ${task_seconds}s$([ "$nflaky" -gt 0 ] && echo ", ${job_ids[1]} of $nflaky tasks whose first attempt fails for $flaky % of them"); $nfaults faults planned (seed $seed)"

  # The faults, each when its share of the tasks is done.
  local share kind target outage at done_now last_done=-1 last_move=$SECONDS stall=120 ready mid_job=0
  while read -r share kind target outage; do
    at=$(python3 -c "print(int($share * $ntasks))")
    while :; do
      done_now=$(terminal_count)
      [ "$done_now" -ge "$at" ] && break
      if [ "$done_now" != "$last_done" ]; then last_done=$done_now; last_move=$SECONDS; fi
      if [ $((SECONDS - last_move)) -ge $stall ]; then
        fail+=("stuck: no task ended for ${stall}s at $done_now/$ntasks, waiting to inject fault $((faults_done + 1))")
        diagnose; break 2
      fi
      supervise; sleep 0.3
    done
    faults_done=$((faults_done + 1))
    kinds_done="$kinds_done $kind"
    [ "$done_now" -lt "$ntasks" ] && mid_job=$((mid_job + 1))
    case "$kind" in
      postgres)
        say "  fault $faults_done/$nfaults at $done_now/$ntasks done: Postgres fast shutdown, start in ${outage}s"
        pg_stop; sleep "$outage"; pg_start
        ready=$(all_ready) || fail+=("after Postgres restarted (fault $faults_done): $ready")
        say "    every process ready again after $ready" ;;
      moto)
        say "  fault $faults_done/$nfaults at $done_now/$ntasks done: moto_server killed, back in ${outage}s with its queues gone, then created again"
        kill -KILL "$moto_pid"; wait "$moto_pid" 2>/dev/null || true
        sleep "$outage"; moto_start
        "$bin" sqs init --name "$name" --max-receives 5 >/dev/null 2>>"$dir/sqs-init.log"
        ready=$(all_ready) || fail+=("after moto restarted (fault $faults_done): $ready")
        say "    every process ready again after $ready" ;;
      *)
        say "  fault $faults_done/$nfaults at $done_now/$ntasks done: SIGKILL $target, restart in ${outage}s"
        kill_role "$target"; sleep "$outage"; start_role "$target" ;;
    esac
  done <"$dir/plan"

  # The end of the jobs, in the log.
  local ended="" end_deadline=$((SECONDS + end_timeout))
  if [ ${#fail[@]} = 0 ]; then
    last_move=$SECONDS
    while :; do
      ended=$(job_ends)
      [[ " $ended " == *" none "* ]] || break
      done_now=$(terminal_count)
      if [ "$done_now" != "$last_done" ]; then last_done=$done_now; last_move=$SECONDS; fi
      if [ $SECONDS -ge $end_deadline ] || [ $((SECONDS - last_move)) -ge $stall ]; then
        fail+=("stuck: the jobs did not end ($done_now/$ntasks tasks terminal; $((SECONDS - last_move))s without progress)")
        diagnose; break
      fi
      supervise; sleep 0.5
    done
  fi
  local run_seconds=$((SECONDS - t0))
  say "$name: jobs ${ended:-not ended} after ${run_seconds}s; $faults_done faults ($mid_job of the planned ones while tasks were left):$(printf '%s\n' $kinds_done | sort | uniq -c | awk '{printf " %s x%s", $2, $1}')"
  [ "$faults_done" -ge "$nfaults" ] || fail+=("only $faults_done of $nfaults faults were injected")

  # The projector catches up: both projections at the head of the log.
  if [ ${#fail[@]} = 0 ]; then
    deadline=$((SECONDS + 120))
    until "$bin" projector status --database-url "$db" 2>/dev/null \
        | awk 'NR > 1 { n++; if ($4 != 0) bad = 1 } END { exit !(n > 0 && !bad) }'; do
      [ $SECONDS -lt $deadline ] || { fail+=("the projector did not catch up with the log within 120s"); break; }
      supervise; sleep 0.5
    done
  fi

  # Nothing wedged: every process answers readiness, the orchestrator leads, SIGTERM stops each.
  for role in orchestrator projector worker1 worker2 worker3; do
    if ! kill -0 "${pid[$role]}" 2>/dev/null; then
      fail+=("$role is not running at the end"); continue
    fi
    curl -sf -m 10 "${ready_url[$role]}" >/dev/null || fail+=("$role did not answer /health/ready within 10s")
  done
  # A standby tries for the lock every second: after a late restart of Postgres it may need one.
  deadline=$((SECONDS + 10))
  until curl -sf -m 5 "${ready_url[orchestrator]%/health/ready}/metrics" | grep -qx 'shoal_orchestrator_leader 1'; do
    [ $SECONDS -lt $deadline ] || { fail+=("the orchestrator did not hold the leader lock within 10s"); break; }
    sleep 0.5
  done
  for role in "${!pid[@]}"; do kill -TERM "${pid[$role]}" 2>/dev/null || true; done
  for role in "${!pid[@]}"; do
    local waited=0
    while kill -0 "${pid[$role]}" 2>/dev/null && [ $waited -lt 200 ]; do sleep 0.1; waited=$((waited + 1)); done
    if kill -0 "${pid[$role]}" 2>/dev/null; then
      fail+=("$role did not stop within 20s of SIGTERM")
      kill -KILL "${pid[$role]}" 2>/dev/null || true
    fi
    wait "${pid[$role]}" 2>/dev/null || true
  done
  pid=()
  [ ${#unexpected[@]} = 0 ] || fail+=("processes exited on their own: ${unexpected[*]}")

  # The log.
  local n_streams nonterminal no_end no_start double_start double_completion completed failed
  n_streams=$(q "SELECT count(DISTINCT stream_id) FROM events WHERE event_type = 'TaskEnqueued'")
  nonterminal=$(q "WITH last AS (SELECT DISTINCT ON (stream_id) stream_id, event_type, data FROM events
                    WHERE stream_id LIKE 'task-%' ORDER BY stream_id, stream_version DESC)
                  SELECT count(*) FROM last WHERE NOT (event_type IN ('TaskCompleted', 'TaskDeadLettered')
                    OR (event_type = 'TaskFailed' AND (data->>'final_failure')::boolean))")
  read -r no_end no_start double_start double_completion completed failed < <(q "
    WITH s AS (SELECT stream_id, (data->>'attempt')::int AS a FROM events WHERE event_type = 'TaskStarted'),
         e AS (SELECT stream_id, (data->>'attempt')::int AS a FROM events WHERE event_type IN ('TaskCompleted', 'TaskFailed')),
         ends AS (SELECT stream_id, a, count(*) AS n FROM e GROUP BY stream_id, a)
    SELECT (SELECT count(*) FROM (SELECT DISTINCT stream_id, a FROM s) x
              LEFT JOIN ends USING (stream_id, a) WHERE ends.n IS DISTINCT FROM 1),
           (SELECT count(*) FROM ends LEFT JOIN (SELECT DISTINCT stream_id, a FROM s) x USING (stream_id, a)
              WHERE x.a IS NULL),
           (SELECT count(*) FROM (SELECT 1 FROM s GROUP BY stream_id, a HAVING count(*) > 1) x),
           (SELECT count(*) FROM (SELECT 1 FROM events WHERE event_type = 'TaskCompleted' GROUP BY stream_id HAVING count(*) > 1) x),
           (SELECT count(DISTINCT stream_id) FROM events WHERE event_type = 'TaskCompleted'),
           (SELECT count(DISTINCT stream_id) FROM events WHERE event_type = 'TaskFailed' AND (data->>'final_failure')::boolean)" | tr '|' ' ')
  say "$name: log: $n_streams tasks, $completed completed, $failed failed, $nonterminal not terminal; attempts without exactly one end $no_end, ends without a start $no_start, attempts started twice $double_start, tasks completed twice $double_completion"
  [ "$n_streams" = "$ntasks" ] || fail+=("$n_streams tasks in the log, not $ntasks")
  [ "$nonterminal" = 0 ] || fail+=("$nonterminal tasks are not terminal in the log")
  [ "$no_end" = 0 ] || fail+=("$no_end started attempts do not have exactly one end")
  [ "$no_start" = 0 ] || fail+=("$no_start ends have no start")
  [ "$double_start" = 0 ] || fail+=("$double_start attempts started twice")
  [ "$double_completion" = 0 ] || fail+=("$double_completion tasks completed twice")
  # Only the planned first attempts fail, each once, and their second attempts complete: a
  # FAILED task, or any other failure, was caused by a fault.
  [ "$failed" = 0 ] || fail+=("$failed tasks FAILED (only first attempts fail: a fault did it)")
  local planned attempt_failures retries
  planned=$(( nflaky / 100 * flaky + (nflaky % 100 < flaky ? nflaky % 100 : flaky) ))
  read -r attempt_failures retries < <(q "
    SELECT (SELECT count(*) FROM events WHERE event_type = 'TaskFailed'),
           (SELECT count(*) FROM events WHERE event_type = 'TaskRetryScheduled')" | tr '|' ' ')
  say "$name: retries: $attempt_failures failed attempts and $retries retries scheduled; $planned planned"
  [ "$attempt_failures" = "$planned" ] && [ "$retries" = "$planned" ] \
    || fail+=("$attempt_failures failed attempts and $retries retries, not the $planned planned")
  [ -z "$ended" ] || [[ "$ended" =~ ^(JobCompleted ?)+$ ]] || fail+=("the jobs ended with $ended (in order: ${job_ids[*]})")

  # Each job's counts against its tasks' states, the log and the orchestrator; the analytics'
  # task counts against all tasks.
  local j by_status job_row orch_row log_row analytics_row all_tasks
  for j in "${job_ids[@]}"; do
    log_row=$(q "WITH last AS (SELECT DISTINCT ON (stream_id) event_type, data FROM events
                   WHERE stream_id LIKE 'task-%' AND data->>'job_id' = '$j' ORDER BY stream_id, stream_version DESC),
                 s AS (SELECT CASE WHEN event_type = 'TaskCompleted' THEN 'COMPLETED'
                                   WHEN event_type = 'TaskDeadLettered' THEN 'FAILED'
                                   WHEN event_type = 'TaskFailed' AND (data->>'final_failure')::boolean THEN 'FAILED'
                                   WHEN event_type = 'TaskStarted' THEN 'RUNNING'
                                   WHEN event_type = 'TaskEnqueued' THEN 'ENQUEUED'
                                   ELSE 'RETRYING' END AS status FROM last)
                 SELECT coalesce(sum((status = 'COMPLETED')::int), 0) || ' ' || coalesce(sum((status = 'FAILED')::int), 0)
                     || ' ' || coalesce(sum((status = 'RUNNING')::int), 0) || ' ' || coalesce(sum((status = 'ENQUEUED')::int), 0)
                     || ' ' || coalesce(sum((status = 'RETRYING')::int), 0) || ' ' || count(*) FROM s")
    by_status=$(q "SELECT coalesce(sum((status = 'COMPLETED')::int), 0) || ' ' || coalesce(sum((status = 'FAILED')::int), 0)
                     || ' ' || coalesce(sum((status = 'RUNNING')::int), 0) || ' ' || coalesce(sum((status = 'ENQUEUED')::int), 0)
                     || ' ' || coalesce(sum((status = 'RETRYING')::int), 0) || ' ' || count(*) FROM tasks WHERE job_id = '$j'")
    job_row=$(q "SELECT completed || ' ' || failed || ' ' || running || ' ' || queued || ' ' || retrying || ' ' || created FROM jobs WHERE id = '$j'")
    orch_row=$(q "SELECT completed || ' ' || failed || ' ' || running || ' ' || queued || ' ' || retrying || ' ' || created FROM orchestrator_jobs WHERE job_id = '$j'")
    say "$name: job $j counts (completed failed running queued retrying all): log $log_row; tasks table $by_status; jobs row $job_row; orchestrator $orch_row"
    [ "$by_status" = "$log_row" ] || fail+=("job $j: the tasks table ($by_status) does not match the log ($log_row)")
    [ "$job_row" = "$by_status" ] || fail+=("job $j: the jobs row ($job_row) does not match the tasks table ($by_status)")
    [ "$orch_row" = "$by_status" ] || fail+=("job $j: the orchestrator's counts ($orch_row) do not match the tasks table ($by_status)")
  done
  all_tasks=$(q "SELECT coalesce(sum((status = 'COMPLETED')::int), 0) || ' ' || coalesce(sum((status = 'FAILED')::int), 0)
                   || ' ' || coalesce(sum((status = 'RUNNING')::int), 0) || ' ' || coalesce(sum((status = 'ENQUEUED')::int), 0)
                   || ' ' || coalesce(sum((status = 'RETRYING')::int), 0) || ' ' || count(*) FROM tasks")
  analytics_row=$(q "SELECT coalesce(sum(count) FILTER (WHERE status = 'COMPLETED'), 0) || ' ' || coalesce(sum(count) FILTER (WHERE status = 'FAILED'), 0)
                       || ' ' || coalesce(sum(count) FILTER (WHERE status = 'RUNNING'), 0) || ' ' || coalesce(sum(count) FILTER (WHERE status = 'ENQUEUED'), 0)
                       || ' ' || coalesce(sum(count) FILTER (WHERE status = 'RETRYING'), 0) || ' ' || coalesce(sum(count), 0) FROM analytics_tasks_by_status")
  say "$name: all tasks: tasks table $all_tasks; analytics $analytics_row"
  [ "$analytics_row" = "$all_tasks" ] || fail+=("analytics' task counts ($analytics_row) do not match the tasks table ($all_tasks)")
  if [ "$queue_kind" = sql ]; then
    say "$name: SQL queue left $(q "SELECT count(*) FROM task_queue") messages and $(q "SELECT count(*) FROM task_dead_letters") dead letters"
  fi

  # Every read table against a full replay of the log.
  dump_read_tables "$dir/tables-live"
  "$bin" projector rebuild jobs --database-url "$db" >/dev/null 2>>"$dir/rebuild.log" || fail+=("projector rebuild jobs failed (see $dir/rebuild.log)")
  "$bin" projector rebuild analytics --database-url "$db" >/dev/null 2>>"$dir/rebuild.log" || fail+=("projector rebuild analytics failed (see $dir/rebuild.log)")
  dump_read_tables "$dir/tables-replayed"
  local differ=() f rows=0
  for f in "$dir"/tables-live/*.tsv; do
    rows=$((rows + $(wc -l <"$f")))
    cmp -s "$f" "$dir/tables-replayed/$(basename "$f")" || differ+=("$(basename "$f" .tsv)")
  done
  if [ ${#differ[@]} = 0 ]; then
    say "$name: read tables equal a full replay ($(ls "$dir/tables-live" | wc -l) tables, $rows rows)"
  else
    fail+=("read tables differ from a full replay: ${differ[*]} (diff $dir/tables-live $dir/tables-replayed)")
    for f in "${differ[@]}"; do
      diff "$dir/tables-live/$f.tsv" "$dir/tables-replayed/$f.tsv" | head -6 | sed "s/^/    $f: /"
    done
  fi

  say "$name: finished in $((SECONDS - t0))s"
  if [ ${#fail[@]} -gt 0 ]; then
    for f in "${fail[@]}"; do echo "FAIL $name (seed $seed): $f" >&2; done
    return 1
  fi
}

failures=0
started_at=$SECONDS
if [ "$only" != sqs ]; then
  run_scenario faults_sql sql "$tasks" "$flaky_tasks" "$faults" || failures=$((failures + 1))
fi
if [ "$only" != sql ]; then
  command -v moto_server >/dev/null || { echo "moto_server is missing: pip install 'moto[server]'" >&2; exit 1; }
  moto_port=$(free_port)
  moto_start
  export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=faults AWS_SECRET_ACCESS_KEY=faults AWS_EC2_METADATA_DISABLED=true
  unset AWS_PROFILE
  run_scenario faults_sqs sqs "$sqs_tasks" "$sqs_flaky_tasks" "$sqs_faults" || failures=$((failures + 1))
fi

# What the machine spent, for sizing: on 2 cores the run cannot take less than half of it.
[ -n "$moto_pid" ] && { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; moto_pid=""; }
times >"$logdir/times"   # here, not in a subshell, which would count only its own children
cpu_children=$(tail -1 "$logdir/times" | awk '{ gsub(/[ms]/, " "); print int($1 * 60 + $2 + $3 * 60 + $4) }')
say "CPU used: $cpu_children s by shoal, moto and the tools, $((pg_cpu_done + $(pg_cpu))) s by Postgres"
if [ "$failures" -gt 0 ]; then
  echo "fault suite: $failures scenario(s) failed with seed $seed (replay: scripts/faults.sh --seed $seed${replay[*]:+ ${replay[*]}}); logs in $logdir" >&2
  exit 1
fi
say "fault suite passed in $((SECONDS - started_at))s with seed $seed$([ $long = 1 ] && echo ' (long form)')"
