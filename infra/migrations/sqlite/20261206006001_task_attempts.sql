-- One row per attempt of a task (see the Postgres migration and ADR 18). Append-only: never
-- edit a migration after it has landed, add a new one.
CREATE TABLE task_attempts (
    task_id            TEXT NOT NULL,
    seq                INTEGER NOT NULL,
    job_id             TEXT NOT NULL,
    task_index         INTEGER NOT NULL,
    attempt            INTEGER NOT NULL,
    queued_us          INTEGER NOT NULL,
    not_before_us      INTEGER,
    worker             TEXT,
    started_us         INTEGER,
    ended_us           INTEGER,
    duration_ms        INTEGER,
    outcome            TEXT NOT NULL,
    error              TEXT,
    retry_at_us        INTEGER,
    retry_not_before_us INTEGER,
    retry_backoff_ms   INTEGER,
    retry_manual       INTEGER,
    dead_letter_reason TEXT,
    PRIMARY KEY (task_id, seq)
) STRICT;

CREATE INDEX task_attempts_job_idx ON task_attempts (job_id, task_index, seq);
