-- Fair share and priorities on the SQL task queue (see the Postgres migration).
ALTER TABLE task_queue ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_queue ADD COLUMN job_rank INTEGER NOT NULL DEFAULT 0;

CREATE INDEX task_queue_fair_idx ON task_queue (priority DESC, receive_count, job_rank, id, visible_at);

CREATE TABLE task_queue_priorities (
    job_id    TEXT PRIMARY KEY,
    priority  INTEGER NOT NULL
) STRICT;
