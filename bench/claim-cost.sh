#!/usr/bin/env bash
# The SQL queue's claim, first in first out against fair share (ADR 15), side by side on one
# Postgres: two copies of the queue table, one with the old claim order and indexes, one with the
# fair order and its index (ADR 15), each loaded with JOBS jobs of TASKS tasks. Each pgbench transaction
# claims BATCH rows as the queue does (one statement: lock with SKIP LOCKED, hide, new receipt)
# and then acknowledges them (deletes them by id), so that both the claim's read and its index
# maintenance are counted. Rounds alternate between the two, so a busy machine hurts both alike.
#
#   bench/claim-cost.sh postgres://user@127.0.0.1:port/db [rounds] [seconds]
#
# Prints each round's tasks per second and the median of each; run it on a throwaway database
# (scripts/pg.sh start DIR): it creates and drops the tables claim_fifo and claim_fair.
set -euo pipefail

url=${1:?usage: $0 DATABASE_URL [rounds] [seconds]}
rounds=${2:-3}
seconds=${3:-15}
JOBS=${JOBS:-20}
TASKS=${TASKS:-10000}
BATCH=${BATCH:-16}
CLIENTS=${CLIENTS:-4}

psql -q -v ON_ERROR_STOP=1 "$url" <<SQL
DROP TABLE IF EXISTS claim_fifo, claim_fair;
CREATE TABLE claim_fifo (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job_id UUID NOT NULL,
    task_id UUID NOT NULL, attempt INTEGER NOT NULL, body TEXT NOT NULL,
    visible_at TIMESTAMPTZ NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, receipt UUID,
    enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (job_id, task_id, attempt));
CREATE INDEX ON claim_fifo (visible_at, id);
CREATE TABLE claim_fair (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job_id UUID NOT NULL,
    task_id UUID NOT NULL, attempt INTEGER NOT NULL, body TEXT NOT NULL,
    visible_at TIMESTAMPTZ NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, receipt UUID,
    enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    priority INTEGER NOT NULL DEFAULT 0, job_rank BIGINT NOT NULL DEFAULT 0,
    UNIQUE (job_id, task_id, attempt));
CREATE INDEX ON claim_fair (visible_at, id);
CREATE INDEX ON claim_fair (priority DESC, receive_count, job_rank, id, visible_at);

CREATE FUNCTION claim_fifo_round(n int) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE ids bigint[];
BEGIN
    WITH picked AS MATERIALIZED (
        SELECT id FROM claim_fifo WHERE visible_at <= now()
        ORDER BY visible_at, id LIMIT n FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE claim_fifo q SET visible_at = now() + interval '30 seconds',
            receive_count = q.receive_count + 1, receipt = gen_random_uuid()
        FROM picked WHERE q.id = picked.id RETURNING q.id)
    SELECT array_agg(id) INTO ids FROM claimed;
    DELETE FROM claim_fifo WHERE id = ANY(ids);
END \$\$;
CREATE FUNCTION claim_fair_round(n int) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE ids bigint[];
BEGIN
    WITH picked AS MATERIALIZED (
        SELECT id FROM claim_fair WHERE visible_at <= now()
        ORDER BY priority DESC, receive_count, job_rank, id LIMIT n FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE claim_fair q SET visible_at = now() + interval '30 seconds',
            receive_count = q.receive_count + 1, receipt = gen_random_uuid()
        FROM picked WHERE q.id = picked.id RETURNING q.id)
    SELECT array_agg(id) INTO ids FROM claimed;
    DELETE FROM claim_fair WHERE id = ANY(ids);
END \$\$;
SQL

load() {
  psql -q -v ON_ERROR_STOP=1 "$url" <<SQL
TRUNCATE claim_fifo, claim_fair;
INSERT INTO claim_fifo (job_id, task_id, attempt, body, visible_at)
SELECT md5('job' || j)::uuid, gen_random_uuid(), 1, repeat('x', 300), now()
FROM generate_series(1, $JOBS) j, generate_series(0, $TASKS - 1) t ORDER BY t, j;
INSERT INTO claim_fair (job_id, task_id, attempt, body, visible_at, job_rank)
SELECT md5('job' || j)::uuid, gen_random_uuid(), 1, repeat('x', 300), now(), t
FROM generate_series(1, $JOBS) j, generate_series(0, $TASKS - 1) t ORDER BY t, j;
VACUUM ANALYZE claim_fifo, claim_fair;
SQL
}

script=$(mktemp -d)
trap 'rm -rf "$script"; psql -q "$url" -c "DROP TABLE IF EXISTS claim_fifo, claim_fair; DROP FUNCTION IF EXISTS claim_fifo_round(int), claim_fair_round(int);" >/dev/null 2>&1 || true' EXIT
echo "SELECT claim_fifo_round($BATCH);" >"$script/fifo.sql"
echo "SELECT claim_fair_round($BATCH);" >"$script/fair.sql"

load
echo "== plans (one claim of $BATCH from $((JOBS * TASKS)) rows)"
for order in "visible_at, id:claim_fifo" "priority DESC, receive_count, job_rank, id:claim_fair"; do
  table=${order##*:}
  psql -q "$url" -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM $table WHERE visible_at <= now() ORDER BY ${order%%:*} LIMIT $BATCH FOR UPDATE SKIP LOCKED"
done

declare -a fifo fair
for round in $(seq 1 "$rounds"); do
  for kind in fifo fair; do
    load
    tps=$(pgbench -n -c "$CLIENTS" -j 2 -T "$seconds" -f "$script/$kind.sql" "$url" 2>/dev/null |
      awk '/^tps = / { print $3 }')
    tasks=$(awk -v t="$tps" -v b="$BATCH" 'BEGIN { printf "%.0f", t * b }')
    echo "round $round $kind: $tasks tasks/s (claim + ack, $CLIENTS clients)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "$kind" = fifo ]; then fifo+=("$tasks"); else fair+=("$tasks"); fi
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
m_fifo=$(median "${fifo[@]}")
m_fair=$(median "${fair[@]}")
echo "median fifo: $m_fifo tasks/s, fair: $m_fair tasks/s, fair/fifo: $(awk -v a="$m_fair" -v b="$m_fifo" 'BEGIN { printf "%.3f", a / b }')"
