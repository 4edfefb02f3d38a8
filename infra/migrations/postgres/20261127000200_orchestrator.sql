-- The built-in orchestrator's state (see infra/src/orchestrator_store.rs). Append-only: never
-- edit a migration after it has landed, add a new one.
--
-- One row per job the orchestrator has seen: its task counts folded from the log up to the
-- `orchestrator` checkpoint, saved in the same statement as that checkpoint, so a new leader
-- resumes with exact counts. It is the orchestrator's private memory, not a read model: the
-- event log stays the truth, and the table can be rebuilt by replaying the log from START.

CREATE TABLE orchestrator_jobs (
    job_id          UUID PRIMARY KEY,
    total_tasks     BIGINT NOT NULL CHECK (total_tasks >= 0),
    -- Tasks 0..created_upto exist (from TasksCreated): where expansion resumes.
    created_upto    BIGINT NOT NULL CHECK (created_upto >= 0),
    created         BIGINT NOT NULL CHECK (created >= 0),
    queued          BIGINT NOT NULL CHECK (queued >= 0),
    running         BIGINT NOT NULL CHECK (running >= 0),
    completed       BIGINT NOT NULL CHECK (completed >= 0),
    failed          BIGINT NOT NULL CHECK (failed >= 0),
    retrying        BIGINT NOT NULL CHECK (retrying >= 0),
    -- ACTIVE until the job ends; COMPLETED and FAILED are closed (FAILED reopens on a retry
    -- request), CANCELLED is closed for good.
    status          TEXT NOT NULL CHECK (status IN ('ACTIVE', 'COMPLETED', 'FAILED', 'CANCELLED')),
    -- The version of the last event of `job-<id>` folded here: the monitor only decides when
    -- the job stream has nothing newer.
    job_version     BIGINT NOT NULL CHECK (job_version >= 0),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What a new leader loads: the jobs still running.
CREATE INDEX orchestrator_jobs_active_idx ON orchestrator_jobs (job_id) WHERE status = 'ACTIVE';
