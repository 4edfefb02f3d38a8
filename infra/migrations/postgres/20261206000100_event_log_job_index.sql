-- The event log by job (see infra/src/eventlog/mod.rs, `read_job` and
-- `job_failed_task_streams`). Append-only: never edit a migration after it has landed, add a
-- new one.
--
-- Every event is self-describing: its payload carries its `job_id` (domain/src/events.rs). So
-- the index is on that field of the stored JSON, and no column is added: nothing to backfill,
-- and old rows are indexed as they are. Building it on a large log locks appends for the
-- build (a migration runs in a transaction, so not CONCURRENTLY): on a big production log,
-- create the same indexes CONCURRENTLY by hand first, and this migration finds them.

-- A job's events (its own stream's and its tasks'), in log order: a job's history page.
CREATE INDEX IF NOT EXISTS events_job_idx
    ON events ((data->>'job_id'), transaction_id, position);

-- A job's tasks that failed for good at least once: what `retryFailedTasks` reads. Small
-- (one entry per final failure), so it costs the appends almost nothing.
CREATE INDEX IF NOT EXISTS events_job_final_failures_idx
    ON events ((data->>'job_id'), stream_id)
    WHERE event_type = 'TaskFailed' AND (data->>'final_failure') = 'true';
