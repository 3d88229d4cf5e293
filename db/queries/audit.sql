-- name: InsertAuditLog :exec
INSERT INTO audit_logs (team_id, actor_type, actor_id, resource_type, resource_id, action, outcome, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- name: ListAuditLogs :many
-- Newest first, strictly older than before_id (keyset pagination).
SELECT * FROM audit_logs
WHERE team_id = sqlc.arg(team_id)::uuid AND id < sqlc.arg(before_id)::bigint
ORDER BY id DESC
LIMIT sqlc.arg(max_rows)::int;
