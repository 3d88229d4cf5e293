-- Operations that converge after a crash.
--
-- A snapshot template's row is written before its host makes the snapshot
-- (the row reserves the name and counts against the team's templates), so
-- it is `pending` until the host has answered: a template whose control
-- plane died meanwhile is finished (the host has it) or removed by the
-- sweeper once its lease, updated_at, has not been renewed for a while.
-- Listings and creates see only `ready` templates.

-- +goose Up
ALTER TABLE templates ADD COLUMN status text NOT NULL DEFAULT 'ready'
    CHECK (status IN ('pending', 'ready'));
ALTER TABLE templates ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX templates_pending_idx ON templates (updated_at) WHERE status = 'pending';

-- +goose Down
DROP INDEX templates_pending_idx;
ALTER TABLE templates DROP COLUMN updated_at;
ALTER TABLE templates DROP COLUMN status;
