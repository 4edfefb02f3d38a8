-- The event log by job (see infra/src/eventlog/mod.rs, `read_job` and
-- `job_failed_task_streams`). Append-only: never edit a migration after it has landed, add a
-- new one.
--
-- Every event's payload carries its `job_id` (domain/src/events.rs): the index is on that
-- field of the stored JSON, so no column is added and nothing is backfilled.

-- A job's events (its own stream's and its tasks'), in log order: a job's history page.
CREATE INDEX IF NOT EXISTS events_job_idx
    ON events (json_extract(data, '$.job_id'), position);

-- A job's tasks that failed for good at least once: what `retryFailedTasks` reads.
CREATE INDEX IF NOT EXISTS events_job_final_failures_idx
    ON events (json_extract(data, '$.job_id'), stream_id)
    WHERE event_type = 'TaskFailed' AND json_extract(data, '$.final_failure') = 1;
