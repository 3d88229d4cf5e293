-- name: CreateAPIKey :one
INSERT INTO api_keys (team_id, created_by, name, prefix, key_hash, platform)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: GetAPIKeyByHash :one
-- A key carries platform rights only when it was made for them
-- ("platform": true) and the user who made it is still a platform admin.
SELECT k.id, k.team_id, k.last_used_at, k.revoked_at,
       (k.platform AND coalesce(u.platform_admin, false))::boolean AS platform_admin
FROM api_keys k LEFT JOIN users u ON u.id = k.created_by
WHERE k.key_hash = $1;

-- name: TouchAPIKey :exec
-- Records use at most once a minute per key, so authenticating is not a
-- write per request; concurrent requests race harmlessly.
UPDATE api_keys SET last_used_at = sqlc.arg(now)::timestamptz
WHERE id = sqlc.arg(id)::uuid
  AND (last_used_at IS NULL OR last_used_at <= sqlc.arg(now)::timestamptz - interval '1 minute');

-- name: ListAPIKeys :many
SELECT * FROM api_keys WHERE team_id = $1 ORDER BY created_at DESC, id;

-- name: RevokeAPIKey :one
-- Revoking twice keeps the first revocation time.
UPDATE api_keys SET revoked_at = coalesce(revoked_at, sqlc.arg(now)::timestamptz)
WHERE id = sqlc.arg(id)::uuid AND team_id = sqlc.arg(team_id)::uuid
RETURNING *;
