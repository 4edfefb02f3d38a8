-- A job's priority in the read model (see the Postgres migration).
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_priority_created_idx ON jobs (priority, created_at, id);
