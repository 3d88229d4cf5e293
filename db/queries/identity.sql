-- name: CreateUser :one
-- Signing up never makes a platform admin: only `wrenn-cp admin` does
-- (SetPlatformAdmin), so nobody wins platform rights by signing up first.
INSERT INTO users (email, name, password_hash)
VALUES ($1, $2, $3)
RETURNING *;

-- name: SetPlatformAdmin :one
-- Grants or takes away platform rights (wrenn-cp admin).
UPDATE users SET platform_admin = sqlc.arg(platform_admin)::boolean
WHERE id = sqlc.arg(id)::uuid
RETURNING *;

-- name: SetUserPassword :exec
UPDATE users SET password_hash = $2 WHERE id = $1;

-- name: ListPlatformAdmins :many
SELECT * FROM users WHERE platform_admin ORDER BY created_at, id;

-- name: GetUser :one
SELECT * FROM users WHERE id = $1;

-- name: GetUserByEmail :one
-- Emails compare case-insensitively (users_email_key is on lower(email)).
SELECT * FROM users WHERE lower(email) = lower(sqlc.arg(email)::text);

-- name: CreateTeam :one
INSERT INTO teams (name) VALUES ($1)
RETURNING *;

-- name: GetTeam :one
SELECT * FROM teams WHERE id = $1;

-- name: LockTeam :one
-- Serializes membership changes of one team (the last-owner check).
SELECT id FROM teams WHERE id = $1 FOR UPDATE;

-- name: AddTeamMember :one
INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, $3)
RETURNING *;

-- name: GetMemberRole :one
SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2;

-- name: GetUserSessionTeam :many
-- The user (if they exist) and the team a session acts for: team_id when
-- given, else the team they joined first. No rows: no such user; a row
-- with the nil team id: the user is not in that team (or in none).
SELECT u.id AS user_id,
       u.platform_admin,
       coalesce(tm.team_id, '00000000-0000-0000-0000-000000000000'::uuid)::uuid AS team_id,
       coalesce(tm.role, '')::text AS role
FROM users u
LEFT JOIN LATERAL (
    SELECT m.team_id, m.role FROM team_members m
    WHERE m.user_id = u.id
      AND (sqlc.narg(team_id)::uuid IS NULL OR m.team_id = sqlc.narg(team_id)::uuid)
    ORDER BY m.created_at, m.team_id
    LIMIT 1
) tm ON true
WHERE u.id = sqlc.arg(user_id)::uuid;

-- name: ListUserTeams :many
-- A user's teams with their role, in the order they joined.
SELECT t.id, t.name, t.created_at, m.role
FROM team_members m JOIN teams t ON t.id = m.team_id
WHERE m.user_id = $1
ORDER BY m.created_at, t.id;

-- name: ListTeamMembers :many
SELECT m.user_id, u.email, u.name, m.role, m.created_at
FROM team_members m JOIN users u ON u.id = m.user_id
WHERE m.team_id = $1
ORDER BY m.created_at, m.user_id;

-- name: GetTeamMember :one
SELECT m.user_id, u.email, u.name, m.role, m.created_at
FROM team_members m JOIN users u ON u.id = m.user_id
WHERE m.team_id = $1 AND m.user_id = $2;

-- name: UpdateTeamMemberRole :exec
UPDATE team_members SET role = $3 WHERE team_id = $1 AND user_id = $2;

-- name: DeleteTeamMember :exec
DELETE FROM team_members WHERE team_id = $1 AND user_id = $2;

-- name: CountTeamOwners :one
SELECT count(*) FROM team_members WHERE team_id = $1 AND role = 'owner';

-- name: CreateTeamInvite :one
INSERT INTO team_invites (team_id, email, role, token_hash, created_by, expires_at)
VALUES (@team_id, @email, @role, @token_hash, @created_by, @expires_at::timestamptz)
RETURNING *;

-- name: ListTeamInvites :many
-- Open invitations (unused, unexpired).
SELECT * FROM team_invites
WHERE team_id = @team_id AND used_at IS NULL AND expires_at > @now::timestamptz
ORDER BY created_at, id;

-- name: DeleteTeamInvite :one
DELETE FROM team_invites WHERE id = @id AND team_id = @team_id AND used_at IS NULL
RETURNING id;

-- name: UseTeamInvite :one
-- Consumes an invitation: only one signup can win it.
UPDATE team_invites
SET used_at = @now::timestamptz, used_by = @used_by
WHERE token_hash = @token_hash
  AND used_at IS NULL
  AND expires_at > @now::timestamptz
RETURNING *;
