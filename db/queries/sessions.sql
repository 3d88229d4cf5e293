-- Logged-out session tokens (migration 00011).

-- name: RevokeSession :exec
INSERT INTO revoked_sessions (token_hash, expires_at) VALUES (@token_hash, @expires_at)
ON CONFLICT (token_hash) DO NOTHING;

-- name: SessionRevoked :one
SELECT EXISTS (SELECT 1 FROM revoked_sessions WHERE token_hash = @token_hash) AS revoked;

-- name: DeleteExpiredRevokedSessions :execrows
-- Tokens past their own expiry fail verification anyway.
DELETE FROM revoked_sessions WHERE expires_at < @now::timestamptz;
