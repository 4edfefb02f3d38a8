-- Live workers (see infra/src/workers.rs and docs/adr/0017-worker-heartbeats-in-a-table.md): one
-- row per worker process, upserted by its heartbeat every few seconds, read by the dashboard's
-- workers page. Not history: the log keeps what workers did (`TaskStarted.worker`); this table
-- only says who is there now. Rows of workers silent for an hour are deleted by the live
-- workers. Append-only: never edit a migration after it has landed, add a new one.

CREATE TABLE workers (
    worker_id              text PRIMARY KEY,
    host                   text NOT NULL,
    -- `sql`, or `sqs:<queue name>`.
    queue                  text NOT NULL,
    version                text NOT NULL,
    -- running, draining (SIGTERM received, finishing its tasks), stopped.
    state                  text NOT NULL,
    slots_total            bigint NOT NULL,
    slots_used             bigint NOT NULL,
    tasks_per_second       double precision NOT NULL,
    tasks_completed        bigint NOT NULL,
    tasks_failed           bigint NOT NULL,
    heartbeat_interval_ms  bigint NOT NULL,
    started_at             timestamptz NOT NULL,
    -- The database's clock at the heartbeat, so that silence is judged on one clock.
    last_heartbeat         timestamptz NOT NULL
);
