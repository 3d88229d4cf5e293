-- Idempotency keys (Stripe-style) for the operations that create things:
-- a client that retries a create, fork or snapshot with the same
-- Idempotency-Key gets the first request's result instead of a second
-- resource. A key is scoped to its team and operation kind. The row is
-- written in the same transaction as the resource's row(s) it names, so
-- a key never outlives or predates what it made. Rows live 24 h; the
-- sandbox sweeper deletes expired ones.

-- +goose Up
CREATE TABLE idempotency_keys (
    team_id       uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    op            text NOT NULL CHECK (op IN ('create', 'fork', 'snapshot')),
    key           text NOT NULL,
    -- SHA-256 of the request's canonical form (method, route, path
    -- parameters, body bytes): the same key with another request is
    -- refused.
    request_hash  bytea NOT NULL,
    -- create: the sandbox it made; fork: the source sandbox.
    sandbox_id    text,
    -- fork: the sandboxes it made.
    fork_ids      text[],
    -- snapshot: the template it made.
    template_id   uuid,
    -- pending unless the first request recorded its outcome: failed with
    -- the error it answered (done is not needed: a success is read from
    -- the resource's rows, starting or pending while in flight).
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    error_code    text NOT NULL DEFAULT '',
    error_message text NOT NULL DEFAULT '',
    -- A create's traffic token (shown once, stored elsewhere only as a
    -- hash), sealed like access tokens so a replay can show it again.
    traffic_token_sealed bytea,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (team_id, op, key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
