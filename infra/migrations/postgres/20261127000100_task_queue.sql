-- The SQL task queue (see infra/src/queue/sql.rs for the contract). Append-only: never edit a
-- migration after it has landed, add a new one.
--
-- A row lives from `send` to `ack` (or `dead_letter`, or `purge_job`) and is then DELETED, not
-- marked: the table holds only pending work, and autovacuum reclaims the churn.

CREATE TABLE task_queue (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          UUID NOT NULL,
    task_id         UUID NOT NULL,
    attempt         INTEGER NOT NULL CHECK (attempt >= 0),
    -- The serialized TaskMessage, kept as sent: TEXT rather than JSONB, so that a malformed
    -- (poison) message can be stored and delivered as it is, and nothing is parsed twice.
    body            TEXT NOT NULL,
    -- Deliverable when visible_at <= now(): a send's delay, a receive's visibility timeout,
    -- a release's delay all move it.
    visible_at      TIMESTAMPTZ NOT NULL,
    receive_count   INTEGER NOT NULL DEFAULT 0,
    -- Set by each receive (a new one each time, so a stale holder's ack or extend matches
    -- nothing); NULL before the first receive and after a release.
    receipt         UUID,
    enqueued_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A resend of the same (task, attempt) is a no-op. A task belongs to exactly one job, so
    -- this is the key (task_id, attempt); leading with job_id lets purge_job use this index
    -- instead of needing one more, which every claim (an UPDATE of visible_at, never HOT)
    -- would have to maintain.
    CONSTRAINT task_queue_message_key UNIQUE (job_id, task_id, attempt)
);

-- The claim: the oldest visible rows, `visible_at <= now() ORDER BY visible_at, id LIMIT n`,
-- read in index order without a sort. Also gives min(visible_at) for long polling.
CREATE INDEX task_queue_claim_idx ON task_queue (visible_at, id);

CREATE TABLE task_dead_letters (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL when unknown (kept nullable for messages whose ids cannot be read).
    job_id            UUID,
    task_id           UUID,
    body              TEXT NOT NULL,
    reason            TEXT NOT NULL,
    receive_count     INTEGER NOT NULL,
    dead_lettered_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A job's dead letters, oldest first.
CREATE INDEX task_dead_letters_job_idx ON task_dead_letters (job_id, id);
