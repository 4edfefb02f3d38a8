-- The SQL task queue (see infra/src/queue/sql.rs for the contract). Append-only: never edit a
-- migration after it has landed, add a new one.
--
-- A row lives from `send` to `ack` (or `dead_letter`, or `purge_job`) and is then DELETED, not
-- marked: the table holds only pending work. Times are integer milliseconds since the Unix
-- epoch (UTC), ids are hyphenated UUID text.

CREATE TABLE task_queue (
    id              INTEGER PRIMARY KEY,
    job_id          TEXT NOT NULL,
    task_id         TEXT NOT NULL,
    attempt         INTEGER NOT NULL CHECK (attempt >= 0),
    -- The serialized TaskMessage as sent (or a malformed, poison message).
    body            TEXT NOT NULL,
    -- Deliverable when visible_at <= now.
    visible_at      INTEGER NOT NULL,
    receive_count   INTEGER NOT NULL DEFAULT 0,
    -- New at each receive; NULL before the first receive and after a release.
    receipt         TEXT,
    enqueued_at     INTEGER NOT NULL,
    -- A resend of the same (task, attempt) is a no-op; job_id first serves purge_job (see the
    -- Postgres migration).
    CONSTRAINT task_queue_message_key UNIQUE (job_id, task_id, attempt)
) STRICT;

-- The claim: the oldest visible rows, in index order.
CREATE INDEX task_queue_claim_idx ON task_queue (visible_at, id);

CREATE TABLE task_dead_letters (
    -- AUTOINCREMENT: ids are handed out to operators (remove_dead_letters), never reused.
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id            TEXT,
    task_id           TEXT,
    body              TEXT NOT NULL,
    reason            TEXT NOT NULL,
    receive_count     INTEGER NOT NULL,
    dead_lettered_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX task_dead_letters_job_idx ON task_dead_letters (job_id, id);
