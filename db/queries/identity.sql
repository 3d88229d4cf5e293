-- name: CreateUser :one
-- The first user of an installation is its platform admin (ADR 0003).
-- Callers serialise signups with LockSignups so two first users cannot
-- both see an empty table.
INSERT INTO users (email, name, password_hash, platform_admin)
VALUES ($1, $2, $3, NOT EXISTS (SELECT 1 FROM users))
RETURNING *;

-- name: LockSignups :exec
SELECT pg_advisory_xact_lock(7427001);

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
