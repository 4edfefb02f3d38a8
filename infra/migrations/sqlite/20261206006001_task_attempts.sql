-- One row per attempt of a task (see the Postgres migration and ADR 18). Append-only: never
-- edit a migration after it has landed, add a new one.
CREATE TABLE task_attempts (
    task_id            TEXT NOT NULL,
    seq                INTEGER NOT NULL,
    job_id             TEXT NOT NULL,
    task_index         INTEGER NOT NULL,
    attempt            INTEGER NOT NULL,
    queued_at          TEXT NOT NULL,
    not_before         TEXT,
    worker             TEXT,
    started_at         TEXT,
    ended_at           TEXT,
    duration_ms        INTEGER,
    outcome            TEXT NOT NULL,
    error              TEXT,
    retry_at           TEXT,
    retry_not_before   TEXT,
    retry_backoff_ms   INTEGER,
    retry_manual       INTEGER,
    dead_letter_reason TEXT,
    PRIMARY KEY (task_id, seq)
) STRICT;

CREATE INDEX task_attempts_job_idx ON task_attempts (job_id, task_index, seq);
