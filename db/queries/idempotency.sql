-- Idempotency keys: see db/migrations/00008_idempotency_keys.sql.

-- name: ClaimIdempotencyKey :one
-- Records a first request's key. No row: a live key exists (the caller
-- replays it). An expired key not yet swept is taken over.
INSERT INTO idempotency_keys (team_id, op, key, request_hash, sandbox_id, state,
                              traffic_token_sealed, created_at, updated_at, expires_at)
VALUES (@team_id, @op, @key, @request_hash, sqlc.narg(sandbox_id), 'pending',
        @traffic_token_sealed, @now::timestamptz, @now::timestamptz, @expires_at::timestamptz)
ON CONFLICT (team_id, op, key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, sandbox_id = EXCLUDED.sandbox_id, fork_ids = NULL,
    template_id = NULL, state = 'pending', error_code = '', error_message = '',
    traffic_token_sealed = EXCLUDED.traffic_token_sealed, created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at
WHERE idempotency_keys.expires_at <= @now::timestamptz
RETURNING *;

-- name: GetIdempotencyKey :one
SELECT * FROM idempotency_keys
WHERE team_id = @team_id AND op = @op AND key = @key AND expires_at > @now::timestamptz;

-- name: SetIdempotencyKeyTemplate :exec
UPDATE idempotency_keys SET template_id = @template_id, updated_at = @now::timestamptz
WHERE team_id = @team_id AND op = @op AND key = @key;

-- name: SetIdempotencyKeyForks :exec
UPDATE idempotency_keys SET fork_ids = @fork_ids::text[], updated_at = @now::timestamptz
WHERE team_id = @team_id AND op = @op AND key = @key;

-- name: FinishIdempotencyKey :exec
-- Records how the first request ended (only once).
UPDATE idempotency_keys
SET state = @state, fork_ids = sqlc.narg(fork_ids)::text[], error_code = @error_code,
    error_message = @error_message, updated_at = @now::timestamptz
WHERE team_id = @team_id AND op = @op AND key = @key AND state = 'pending';

-- name: DeleteExpiredIdempotencyKeys :execrows
-- One batch of expired keys; replicas sweeping at once skip each other's.
DELETE FROM idempotency_keys k
USING (SELECT team_id, op, key FROM idempotency_keys
       WHERE expires_at <= @now::timestamptz
       ORDER BY expires_at
       LIMIT @max_rows
       FOR UPDATE SKIP LOCKED) e
WHERE k.team_id = e.team_id AND k.op = e.op AND k.key = e.key;

-- name: TeamSandboxesByID :many
-- A fork's replay: the sandboxes it made, in the order given.
SELECT s.* FROM sandboxes s
JOIN unnest(@ids::text[]) WITH ORDINALITY AS i (id, n) ON s.id = i.id
WHERE s.team_id = @team_id
ORDER BY i.n;

-- name: GetTeamTemplateByID :one
SELECT * FROM templates WHERE id = @id AND team_id = @team_id;
