-- The read model (see infra/src/readmodel/ and the Postgres migration). Append-only: never
-- edit a migration after it has landed, add a new one.
--
-- Times are TEXT in one fixed-width UTC format, '2026-11-27T12:00:00.000000Z', so they sort
-- as text; ids are lower-case hyphenated UUIDs; JSON is TEXT. A rebuild fills copies named
-- `<table>_rebuild` (see infra/src/readmodel/schema.rs: keep it in step with this file).

-- Projection `jobs` ---------------------------------------------------------------------------

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    job_type        TEXT NOT NULL,
    status          TEXT NOT NULL,
    stream_status   TEXT NOT NULL,
    total_tasks     INTEGER NOT NULL,
    created_upto    INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    queued          INTEGER NOT NULL,
    running         INTEGER NOT NULL,
    completed       INTEGER NOT NULL,
    failed          INTEGER NOT NULL,
    retrying        INTEGER NOT NULL,
    parameters      TEXT NOT NULL,
    max_attempts    INTEGER NOT NULL,
    timeout_seconds INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    started_at      TEXT,
    completed_at    TEXT,
    error_message   TEXT,
    cancel_reason   TEXT
) STRICT;

CREATE INDEX jobs_created_idx ON jobs (created_at, id);
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at, id);
CREATE INDEX jobs_type_created_idx ON jobs (job_type, created_at, id);

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    job_id          TEXT NOT NULL,
    task_index      INTEGER NOT NULL,
    job_type        TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    timeout_seconds INTEGER NOT NULL,
    parameters      TEXT,
    result          TEXT,
    error_message   TEXT,
    worker          TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    started_at      TEXT,
    completed_at    TEXT,
    next_attempt_at TEXT,
    duration_ms     INTEGER,
    dead_lettered   INTEGER NOT NULL
) STRICT;

CREATE INDEX tasks_job_index_idx ON tasks (job_id, task_index);
CREATE INDEX tasks_job_status_idx ON tasks (job_id, status, task_index);

-- Projection `analytics` ----------------------------------------------------------------------

CREATE TABLE analytics_job_state (
    job_id          TEXT PRIMARY KEY,
    stream_status   TEXT NOT NULL,
    total_tasks     INTEGER NOT NULL,
    created_upto    INTEGER NOT NULL,
    started         INTEGER NOT NULL
) STRICT;

CREATE TABLE analytics_jobs_by_type (
    job_type        TEXT PRIMARY KEY,
    count           INTEGER NOT NULL
) STRICT;

CREATE TABLE analytics_jobs_by_status (
    status          TEXT PRIMARY KEY,
    count           INTEGER NOT NULL
) STRICT;

CREATE TABLE analytics_tasks_by_status (
    status          TEXT PRIMARY KEY,
    count           INTEGER NOT NULL
) STRICT;

-- `day` is 'YYYY-MM-DD'.
CREATE TABLE analytics_daily (
    day             TEXT PRIMARY KEY,
    jobs_submitted  INTEGER NOT NULL,
    tasks_completed INTEGER NOT NULL,
    tasks_failed    INTEGER NOT NULL
) STRICT;

CREATE TABLE analytics_processing_time (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    count           INTEGER NOT NULL,
    sum_ms          INTEGER NOT NULL,
    min_ms          INTEGER NOT NULL,
    max_ms          INTEGER NOT NULL
) STRICT;

CREATE TABLE analytics_processing_time_buckets (
    bucket          INTEGER PRIMARY KEY,
    count           INTEGER NOT NULL
) STRICT;

CREATE TABLE analytics_throughput (
    minute          TEXT PRIMARY KEY,
    tasks_completed INTEGER NOT NULL,
    tasks_failed    INTEGER NOT NULL
) STRICT;
