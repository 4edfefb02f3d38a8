-- Events a projection could not apply (the database refused what they would write, e.g. a
-- number out of range), parked so that the projection goes on without them (ADR 0011).
-- `shoal projector status` and `shoal_projector_parked_events` show them. Append-only.
CREATE TABLE projection_parked_events (
    projection  TEXT        NOT NULL,
    commit_id   BIGINT      NOT NULL,
    position    BIGINT      NOT NULL,
    stream_id   TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    error       TEXT        NOT NULL,
    parked_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, commit_id, position)
);
