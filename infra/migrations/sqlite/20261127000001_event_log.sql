-- The event log (see infra/src/eventlog/mod.rs for the contract). Append-only: never edit a
-- migration after it has landed, add a new one.
--
-- SQLite has one writer at a time, so positions become visible in order: `position` is also
-- the commit order (LogPosition.commit == position). JSON is stored as checked TEXT.

CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT NOT NULL CHECK (stream_id <> ''),
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    event_type      TEXT NOT NULL CHECK (event_type <> ''),
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    data            TEXT NOT NULL CHECK (json_valid(data)),
    metadata        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    recorded_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
) STRICT;

-- Events are facts: rewriting or deleting one would silently diverge every projection.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: UPDATE on events is not allowed');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: DELETE on events is not allowed');
END;

CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    -- NULL only inside the appending transaction, which sets it before committing.
    outcome     TEXT CHECK (outcome IS NULL OR json_valid(outcome)),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE checkpoints (
    name        TEXT PRIMARY KEY,
    commit_id   INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
