-- The built-in orchestrator's state (see infra/src/orchestrator_store.rs and the Postgres
-- migration). Append-only: never edit a migration after it has landed, add a new one.

CREATE TABLE orchestrator_jobs (
    job_id          TEXT PRIMARY KEY,
    total_tasks     INTEGER NOT NULL CHECK (total_tasks >= 0),
    created_upto    INTEGER NOT NULL CHECK (created_upto >= 0),
    created         INTEGER NOT NULL CHECK (created >= 0),
    queued          INTEGER NOT NULL CHECK (queued >= 0),
    running         INTEGER NOT NULL CHECK (running >= 0),
    completed       INTEGER NOT NULL CHECK (completed >= 0),
    failed          INTEGER NOT NULL CHECK (failed >= 0),
    retrying        INTEGER NOT NULL CHECK (retrying >= 0),
    status          TEXT NOT NULL CHECK (status IN ('ACTIVE', 'COMPLETED', 'FAILED', 'CANCELLED')),
    job_version     INTEGER NOT NULL CHECK (job_version >= 0),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE INDEX orchestrator_jobs_active_idx ON orchestrator_jobs (job_id) WHERE status = 'ACTIVE';
