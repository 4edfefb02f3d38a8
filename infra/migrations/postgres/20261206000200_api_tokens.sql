-- API tokens (see infra/src/tokens.rs and docs/auth.md). The log holds what happened to each
-- token (`TokenCreated`, `TokenRevoked` in `token-<id>`); this table, written in the same
-- transaction, is what a request is checked against. Only the SHA-256 of a token's secret is
-- stored, never the secret. Append-only: never edit a migration after it has landed.

CREATE TABLE api_tokens (
    token_id       uuid PRIMARY KEY,
    -- Unique for good, revoked tokens included: a name in the history names one token.
    name           text NOT NULL UNIQUE,
    -- Space-separated scopes (read submit operate worker admin).
    scopes         text NOT NULL,
    secret_sha256  text NOT NULL,
    created_at     timestamptz NOT NULL,
    revoked_at     timestamptz
);
