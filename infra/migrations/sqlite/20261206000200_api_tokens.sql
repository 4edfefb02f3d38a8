-- API tokens (see infra/src/tokens.rs and the Postgres migration). Append-only: never edit a
-- migration after it has landed, add a new one.

CREATE TABLE api_tokens (
    token_id       TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    scopes         TEXT NOT NULL,
    secret_sha256  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    revoked_at     TEXT
) STRICT;
