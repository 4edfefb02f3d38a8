-- A job's priority in the read model (docs/fairness.md): shown on the job, and `jobs` sorted by
-- it (highest first, then newest: the index read backwards). Append-only: never edit a
-- migration after it has landed, add a new one. The rebuild's DDL (infra/src/readmodel/schema.rs)
-- defines the same column and index.
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_priority_created_idx ON jobs (priority, created_at, id);
