-- The version of the last agent report (event or heartbeat) applied to a
-- sandbox: agents number each sandbox's state changes, and a report is
-- applied only when its version is newer than this, so a late or
-- duplicated report can never undo a newer one.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN agent_version bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN agent_version;
