-- +goose Up
-- Platform admins may add 'regular' hosts, which take every team's
-- sandboxes (ADR 0003). The first user of an installation becomes one.
ALTER TABLE users ADD COLUMN platform_admin boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE users DROP COLUMN platform_admin;
