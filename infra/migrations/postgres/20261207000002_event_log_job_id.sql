-- Each event's job in a column of its own (see infra/src/eventlog/batch.rs, `job_key`), indexed
-- in place of the JSON field. Append-only: never edit a migration after it has landed.
--
-- `events_job_idx` was built on `data->>'job_id'`: every append parsed each event's JSON again
-- for it and inserted a 37-byte text key, about a quarter of the cost of an append
-- (docs/benchmarks.md, "Issue 15: the thirteenth session"). The writer now sets `job_id` from the
-- same field, when it is a UUID as the platform writes one, and the index is on that: a 16-byte
-- key, no parse. Events appended before this migration (and any event whose `job_id` is not
-- such a UUID) have no `job_id` and stay indexed by the JSON field, in a partial index that new
-- events skip; `read_job` reads both. Adding the column rewrites nothing; rebuilding the JSON
-- index as a partial one reads the whole log once (on a large log, create both indexes
-- CONCURRENTLY by hand first: this migration then finds them).
ALTER TABLE events ADD COLUMN IF NOT EXISTS job_id uuid;

CREATE INDEX IF NOT EXISTS events_job_id_idx
    ON events (job_id, transaction_id, position) WHERE job_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS events_job_json_idx
    ON events ((data->>'job_id'), transaction_id, position) WHERE job_id IS NULL;

DROP INDEX IF EXISTS events_job_idx;
