-- Live workers (see infra/src/workers.rs and the Postgres migration). Append-only: never edit
-- a migration after it has landed, add a new one.

CREATE TABLE workers (
    worker_id              TEXT PRIMARY KEY,
    host                   TEXT NOT NULL,
    queue                  TEXT NOT NULL,
    version                TEXT NOT NULL,
    state                  TEXT NOT NULL,
    slots_total            INTEGER NOT NULL,
    slots_used             INTEGER NOT NULL,
    tasks_per_second       REAL NOT NULL,
    tasks_completed        INTEGER NOT NULL,
    tasks_failed           INTEGER NOT NULL,
    heartbeat_interval_ms  INTEGER NOT NULL,
    started_at             TEXT NOT NULL,
    last_heartbeat         TEXT NOT NULL
) STRICT;
