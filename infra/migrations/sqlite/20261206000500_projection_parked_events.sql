-- Events a projection could not apply (the database refused what they would write), parked
-- so that the projection goes on without them (ADR 0011; see the Postgres migration).
CREATE TABLE projection_parked_events (
    projection  TEXT    NOT NULL,
    commit_id   INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    stream_id   TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    parked_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (projection, commit_id, position)
);
