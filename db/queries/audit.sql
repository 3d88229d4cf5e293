-- name: InsertAuditLog :exec
INSERT INTO audit_logs (team_id, actor_type, actor_id, resource_type, resource_id, action, outcome, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- name: ListAuditLogs :many
-- Newest first, strictly older than before_id (keyset pagination). Each
-- filter is optional: NULL matches every row. The walk stays on the
-- (team_id, id DESC) index; the filters are checked on the rows it reads.
SELECT * FROM audit_logs
WHERE team_id = sqlc.arg(team_id)::uuid AND id < sqlc.arg(before_id)::bigint
  AND (sqlc.narg(actor_type)::text IS NULL OR actor_type = sqlc.narg(actor_type)::text)
  AND (sqlc.narg(actor_id)::text IS NULL OR actor_id = sqlc.narg(actor_id)::text)
  AND (sqlc.narg(resource_type)::text IS NULL OR resource_type = sqlc.narg(resource_type)::text)
  AND (sqlc.narg(resource_id)::text IS NULL OR resource_id = sqlc.narg(resource_id)::text)
  AND (sqlc.narg(action)::text IS NULL OR action = sqlc.narg(action)::text)
  AND (sqlc.narg(outcome)::text IS NULL OR outcome = sqlc.narg(outcome)::text)
  AND (sqlc.narg(since)::timestamptz IS NULL OR created_at >= sqlc.narg(since)::timestamptz)
  AND (sqlc.narg(until)::timestamptz IS NULL OR created_at < sqlc.narg(until)::timestamptz)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows)::int;
