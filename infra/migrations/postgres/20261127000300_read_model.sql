-- The read model (see infra/src/readmodel/): tables folded from the event log by the projector
-- and read by the query APIs. Append-only: never edit a migration after it has landed, add a
-- new one.
--
-- Each projection's tables are written together with its checkpoint in `checkpoints`
-- (`projection.jobs`, `projection.analytics`), one transaction per batch. A rebuild fills
-- copies named `<table>_rebuild` (created by the projector with the same definitions as
-- below: keep infra/src/readmodel/schema.rs in step with this file) and swaps them in.

-- Projection `jobs` ---------------------------------------------------------------------------

CREATE TABLE jobs (
    id              UUID PRIMARY KEY,
    job_type        TEXT NOT NULL,
    -- As displayed: stream_status, but RUNNING for an ENQUEUED job whose tasks have started.
    status          TEXT NOT NULL,
    -- The job stream's own status.
    stream_status   TEXT NOT NULL,
    total_tasks     BIGINT NOT NULL,
    created_upto    BIGINT NOT NULL,
    created         BIGINT NOT NULL,
    queued          BIGINT NOT NULL,
    running         BIGINT NOT NULL,
    completed       BIGINT NOT NULL,
    failed          BIGINT NOT NULL,
    retrying        BIGINT NOT NULL,
    parameters      JSONB NOT NULL,
    max_attempts    BIGINT NOT NULL,
    timeout_seconds BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    started_at      TIMESTAMPTZ,
    completed_at    TIMESTAMPTZ,
    error_message   TEXT,
    cancel_reason   TEXT
);

-- Lists: newest/oldest first, optionally by status or type, with (created_at, id) cursors.
CREATE INDEX jobs_created_idx ON jobs (created_at, id);
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at, id);
CREATE INDEX jobs_type_created_idx ON jobs (job_type, created_at, id);

CREATE TABLE tasks (
    id              UUID PRIMARY KEY,
    job_id          UUID NOT NULL,
    task_index      BIGINT NOT NULL,
    job_type        TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    max_attempts    BIGINT NOT NULL,
    timeout_seconds BIGINT NOT NULL,
    parameters      JSONB,
    result          JSONB,
    error_message   TEXT,
    worker          TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    started_at      TIMESTAMPTZ,
    completed_at    TIMESTAMPTZ,
    next_attempt_at TIMESTAMPTZ,
    duration_ms     BIGINT,
    dead_lettered   BOOLEAN NOT NULL
);

-- A job's tasks in index order, all or by status.
CREATE INDEX tasks_job_index_idx ON tasks (job_id, task_index);
CREATE INDEX tasks_job_status_idx ON tasks (job_id, status, task_index);

-- Projection `analytics` ----------------------------------------------------------------------

-- The projection's memory of each job: enough to know its displayed status.
CREATE TABLE analytics_job_state (
    job_id          UUID PRIMARY KEY,
    stream_status   TEXT NOT NULL,
    total_tasks     BIGINT NOT NULL,
    created_upto    BIGINT NOT NULL,
    started         BOOLEAN NOT NULL
);

CREATE TABLE analytics_jobs_by_type (
    job_type        TEXT PRIMARY KEY,
    count           BIGINT NOT NULL
);

-- Rows whose count drops to 0 are deleted.
CREATE TABLE analytics_jobs_by_status (
    status          TEXT PRIMARY KEY,
    count           BIGINT NOT NULL
);

CREATE TABLE analytics_tasks_by_status (
    status          TEXT PRIMARY KEY,
    count           BIGINT NOT NULL
);

-- By UTC day of the event's time.
CREATE TABLE analytics_daily (
    day             DATE PRIMARY KEY,
    jobs_submitted  BIGINT NOT NULL,
    tasks_completed BIGINT NOT NULL,
    tasks_failed    BIGINT NOT NULL
);

-- One row (id = 1): every completed task's processing time.
CREATE TABLE analytics_processing_time (
    id              SMALLINT PRIMARY KEY CHECK (id = 1),
    count           BIGINT NOT NULL,
    sum_ms          BIGINT NOT NULL,
    min_ms          BIGINT NOT NULL,
    max_ms          BIGINT NOT NULL
);

-- The histogram percentiles are estimated from (buckets: infra/src/readmodel/types.rs).
CREATE TABLE analytics_processing_time_buckets (
    bucket          INTEGER PRIMARY KEY,
    count           BIGINT NOT NULL
);

-- By UTC minute of the event's time.
CREATE TABLE analytics_throughput (
    minute          TIMESTAMPTZ PRIMARY KEY,
    tasks_completed BIGINT NOT NULL,
    tasks_failed    BIGINT NOT NULL
);
