-- Logged-out dashboard sessions (DELETE /v1/auth/session): a session token
-- is signed, not stored, so logging out records its hash until it would
-- have expired anyway. Every replica checks it, and a restart keeps it.

-- +goose Up
CREATE TABLE revoked_sessions (
    token_hash bytea PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_sessions_expires_idx ON revoked_sessions (expires_at);

-- +goose Down
DROP TABLE revoked_sessions;
