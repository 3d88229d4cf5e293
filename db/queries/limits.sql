-- Per-team quotas: overrides, usage, and holds (see 00004_team_limits.sql).

-- name: LockTeamQuota :exec
-- Serialises the quota check and the insert that uses the room, per team,
-- across requests and replicas. Taken before LockPlacement whenever both
-- are (one order: no deadlock). The two-int key space is disjoint from
-- LockPlacement's bigint one.
-- team_key is the team id's text form.
SELECT pg_advisory_xact_lock(7427003, hashtext(@team_key::text));

-- name: GetTeamLimits :one
SELECT * FROM team_limits WHERE team_id = @team_id;

-- name: SetTeamLimits :one
INSERT INTO team_limits (team_id, max_sandboxes, max_vcpus, max_memory_mb, max_disk_mb, max_templates, updated_at)
VALUES (@team_id, @max_sandboxes, @max_vcpus, @max_memory_mb, @max_disk_mb, @max_templates, @now::timestamptz)
ON CONFLICT (team_id) DO UPDATE
SET max_sandboxes = excluded.max_sandboxes,
    max_vcpus = excluded.max_vcpus,
    max_memory_mb = excluded.max_memory_mb,
    max_disk_mb = excluded.max_disk_mb,
    max_templates = excluded.max_templates,
    updated_at = excluded.updated_at
RETURNING *;

-- name: TeamUsage :one
-- Every sandbox that exists counts against max_sandboxes and max_disk_mb
-- (a paused or hibernated one keeps its disk, and its memory image on
-- disk); vCPUs and memory count while a VMM holds them (not hibernated).
-- Unexpired holds count in full. Holds expire by the database's clock
-- (now()), like SchedulableHosts reads them.
WITH s AS (
    SELECT count(*) AS sandboxes,
           coalesce(sum(vcpus) FILTER (WHERE state <> 'hibernated'), 0) AS vcpus,
           coalesce(sum(memory_mb) FILTER (WHERE state <> 'hibernated'), 0) AS memory_mb,
           coalesce(sum(disk_mb), 0) AS disk_mb
    FROM sandboxes sb
    WHERE sb.team_id = @team_id
      AND sb.state IN ('starting', 'running', 'paused', 'hibernated', 'missing')
), h AS (
    SELECT coalesce(sum(sandboxes), 0) AS sandboxes, coalesce(sum(vcpus), 0) AS vcpus,
           coalesce(sum(memory_mb), 0) AS memory_mb, coalesce(sum(disk_mb), 0) AS disk_mb
    FROM quota_holds qh
    WHERE qh.team_id = @team_id AND qh.expires_at > now()
), t AS (
    SELECT count(*) AS templates FROM templates tp WHERE tp.team_id = @team_id
)
SELECT (s.sandboxes + h.sandboxes)::bigint AS sandboxes,
       (s.vcpus + h.vcpus)::bigint AS vcpus,
       (s.memory_mb + h.memory_mb)::bigint AS memory_mb,
       (s.disk_mb + h.disk_mb)::bigint AS disk_mb,
       t.templates::bigint AS templates
FROM s, h, t;

-- name: InsertQuotaHold :one
INSERT INTO quota_holds (team_id, host_id, sandboxes, vcpus, memory_mb, disk_mb, expires_at)
VALUES (@team_id, @host_id, @sandboxes, @vcpus, @memory_mb, @disk_mb,
        now() + make_interval(secs => @ttl_seconds::double precision))
RETURNING id;

-- name: DeleteQuotaHold :exec
DELETE FROM quota_holds WHERE id = @id;

-- name: DeleteExpiredQuotaHolds :exec
DELETE FROM quota_holds WHERE expires_at <= now();
