-- What E2B's API asks of a sandbox beyond Wrenn's own model.

-- +goose Up
ALTER TABLE sandboxes
    -- An absolute deadline (E2B's endAt: "timeout from now"); the control
    -- plane's lifetime sweeper applies on_timeout when it passes. NULL: only
    -- the agent's idle timeout applies (Wrenn's own model).
    ADD COLUMN end_at             timestamptz,
    -- A paused sandbox resumes when an SDK call or proxied traffic arrives.
    ADD COLUMN auto_resume        boolean NOT NULL DEFAULT false,
    -- Every user port (never envd's) is served without credentials.
    ADD COLUMN public_traffic     boolean NOT NULL DEFAULT false,
    -- SHA-256 of E2B's traffic access token: with it, a caller may reach
    -- the sandbox's user ports (but not envd).
    ADD COLUMN traffic_token_hash bytea,
    -- The sandbox was paused without its memory (E2B's `memory: false`):
    -- resuming cold-boots it from its disk.
    ADD COLUMN memory_dropped     boolean NOT NULL DEFAULT false;

-- The sweeper's scan: running sandboxes whose deadline passed.
CREATE INDEX sandboxes_end_at_idx ON sandboxes (end_at) WHERE end_at IS NOT NULL AND state = 'running';

-- +goose Down
DROP INDEX sandboxes_end_at_idx;
ALTER TABLE sandboxes
    DROP COLUMN end_at,
    DROP COLUMN auto_resume,
    DROP COLUMN public_traffic,
    DROP COLUMN traffic_token_hash,
    DROP COLUMN memory_dropped;
