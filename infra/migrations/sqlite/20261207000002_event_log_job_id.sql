-- Each event's job in a column of its own, indexed in place of the JSON field; see the Postgres
-- migration of the same name. Append-only: never edit a migration after it has landed.
ALTER TABLE events ADD COLUMN job_id TEXT;

CREATE INDEX IF NOT EXISTS events_job_id_idx
    ON events (job_id, position) WHERE job_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS events_job_json_idx
    ON events (json_extract(data, '$.job_id'), position) WHERE job_id IS NULL;

DROP INDEX IF EXISTS events_job_idx;
