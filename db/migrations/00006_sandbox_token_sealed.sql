-- The sandbox's access token, sealed (AES-GCM under a key derived from the
-- control plane's secret): E2B's connect answers the token again, so a
-- client that only knows the sandbox's id can reach its envd. The SHA-256
-- in access_token_hash stays what the proxy checks.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN access_token_sealed bytea;

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN access_token_sealed;
