-- The event log (see infra/src/eventlog/mod.rs for the contract). Append-only: never edit a
-- migration after it has landed, add a new one.

-- One row per event.
CREATE TABLE events (
    -- Sequence number: unique, increasing in insertion order, but NOT in commit order.
    position        BIGINT GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction's id (xid8; 64 bits, never wraps). Readers order by
    -- (transaction_id, position) and only read below the oldest transaction still running, so a
    -- reader never passes an event that has yet to commit (gap-free reading, ADR 0002).
    transaction_id  BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    stream_id       TEXT NOT NULL CHECK (stream_id <> ''),
    stream_version  BIGINT NOT NULL CHECK (stream_version >= 1),
    event_type      TEXT NOT NULL CHECK (event_type <> ''),
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    -- JSON, not JSONB: the log stores and returns each event's JSON as the writer serialized
    -- it (checked, never converted), and no query looks inside it. JSONB would parse it into
    -- its binary form on every append and print it back on every read, for nothing.
    data            JSON NOT NULL,
    metadata        JSON NOT NULL DEFAULT '{}',
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The global read order, and the key. `position` alone is unique too (identity), so this
    -- is a key; a separate `PRIMARY KEY (position)` would be a third B-tree on every append.
    CONSTRAINT events_pkey PRIMARY KEY (transaction_id, position),
    -- Optimistic concurrency: two appends at the same expected version cannot both commit.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

-- Finding events by position (`read_positions`: idempotent replays, rare). Positions grow with
-- insertion, so the heap is in position order and a BRIN index finds them for almost nothing
-- per append (it summarizes ranges of pages).
CREATE INDEX events_position_brin_idx ON events USING brin (position);

-- Events are facts: rewriting or deleting one would silently diverge every projection.
CREATE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- Idempotency keys of committed appends, with what the append returned.
CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    -- NULL only inside the appending transaction, which sets it before committing.
    outcome     JSONB,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Consumers' read positions (projector, orchestrator, ...), saved with their output.
CREATE TABLE checkpoints (
    name        TEXT PRIMARY KEY,
    commit_id   BIGINT NOT NULL,
    position    BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
