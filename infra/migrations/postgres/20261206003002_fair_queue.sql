-- Fair share and priorities on the SQL task queue (docs/fairness.md, ADR 0015). Append-only:
-- never edit a migration after it has landed, add a new one.
--
-- A claim takes the visible rows in the order (priority DESC, receive_count, job_rank, id):
-- higher priority first; within a priority, messages never received before those received
-- already (whose worker died or released them), then the task of lowest rank within its job,
-- so the tasks of concurrent jobs interleave (round-robin) instead of queueing behind one
-- another. A claim increments receive_count, which moves the row's new index entry out of the
-- head of the index, where the next claims look.

-- The job's priority when the row was sent, kept current by set_priority.
ALTER TABLE task_queue ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- The task's rank within its job: its index (a retry keeps its task's rank).
ALTER TABLE task_queue ADD COLUMN job_rank BIGINT NOT NULL DEFAULT 0;

-- The claim reads this index in order and stops after LIMIT rows: no sort, and rows that are
-- not visible (in flight, delayed) are skipped on the index's visible_at, without a heap visit.
-- task_queue_claim_idx stays: it gives min(visible_at) for long polling and the oldest age.
CREATE INDEX task_queue_fair_idx ON task_queue (priority DESC, receive_count, job_rank, id, visible_at);

-- The priority of jobs whose priority is not the default 0: the priority of rows sent later
-- (tasks created after a change, retries). A row per job, removed when the job is purged.
CREATE TABLE task_queue_priorities (
    job_id    UUID PRIMARY KEY,
    priority  INTEGER NOT NULL
);
