-- One row per attempt of a task, kept by the jobs projection beside `tasks` (same batches,
-- same checkpoint, same rebuild): what a job's timeline lays out, read by job instead of
-- folding the job's events from the log (ADR 18). `seq` is the attempt's place in the task's
-- list of attempts (0 = first), as the domain's fold (`shoal_domain::Attempts`) lists them.
-- Times are whole microseconds since the Unix epoch (`*_us`), so that the timeline's buckets
-- are integer arithmetic in the database, the same on both backends.
-- Jobs whose tasks were created before this table get no rows until `shoal projector rebuild
-- jobs`; their timeline is folded from the log meanwhile.
CREATE TABLE task_attempts (
    task_id            UUID NOT NULL,
    seq                BIGINT NOT NULL,
    job_id             UUID NOT NULL,
    task_index         BIGINT NOT NULL,
    attempt            BIGINT NOT NULL,
    queued_us          BIGINT NOT NULL,
    not_before_us      BIGINT,
    worker             TEXT,
    started_us         BIGINT,
    ended_us           BIGINT,
    duration_ms        BIGINT,
    -- queued, running, completed, retried or failed.
    outcome            TEXT NOT NULL,
    error              TEXT,
    retry_at_us        BIGINT,
    retry_not_before_us BIGINT,
    retry_backoff_ms   BIGINT,
    retry_manual       BOOLEAN,
    dead_letter_reason TEXT,
    PRIMARY KEY (task_id, seq)
);

-- The timeline reads a job's attempts in task order.
CREATE INDEX task_attempts_job_idx ON task_attempts (job_id, task_index, seq);
