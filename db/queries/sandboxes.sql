-- Sandboxes: the REST resource and what the scheduler needs. Every state
-- change is one statement with the states it may leave in its WHERE
-- clause, so concurrent requests and control-plane replicas cannot move a
-- sandbox along an illegal edge.

-- name: InsertSandbox :one
INSERT INTO sandboxes (id, team_id, host_id, template, state, vcpus, memory_mb, disk_mb,
                       timeout_sec, on_timeout, metadata, network, public_ports,
                       access_token_hash, forked_from, end_at, auto_resume, public_traffic,
                       traffic_token_hash, access_token_sealed, created_at, updated_at)
VALUES (@id, @team_id, @host_id, @template, @state, @vcpus, @memory_mb, @disk_mb,
        @timeout_sec, @on_timeout, @metadata, @network, @public_ports,
        @access_token_hash, @forked_from, sqlc.narg(end_at)::timestamptz, @auto_resume, @public_traffic,
        @traffic_token_hash, @access_token_sealed, @now::timestamptz, @now::timestamptz)
RETURNING *;

-- name: GetTeamSandbox :one
SELECT * FROM sandboxes WHERE id = @id AND team_id = @team_id;

-- name: GetProxySandbox :one
-- What the port proxy checks before any credentials are known.
SELECT id, team_id, host_id, state, public_ports, access_token_hash,
       public_traffic, traffic_token_hash, auto_resume, memory_dropped
FROM sandboxes WHERE id = @id;

-- name: ListTeamSandboxes :many
-- The first page, newest first. metadata '{}' matches every row.
SELECT * FROM sandboxes
WHERE team_id = @team_id
  AND state = ANY(@states::text[])
  AND metadata @> @metadata::jsonb
ORDER BY created_at DESC, id DESC
LIMIT @max_rows;

-- name: ListTeamSandboxesAfter :many
-- A later page: rows strictly after the cursor (created_at, id) in
-- newest-first order (keyset pagination: stable under inserts).
SELECT * FROM sandboxes
WHERE team_id = @team_id
  AND state = ANY(@states::text[])
  AND metadata @> @metadata::jsonb
  AND created_at <= @after_created_at::timestamptz
  AND (created_at < @after_created_at::timestamptz OR id < @after_id::text)
ORDER BY created_at DESC, id DESC
LIMIT @max_rows;

-- name: SetSandboxHost :exec
-- A create moving on to the next host.
UPDATE sandboxes SET host_id = @host_id, updated_at = @now::timestamptz
WHERE id = @id AND state = 'starting';

-- name: MarkSandboxRunning :one
-- A create finished. No row: the sandbox was deleted meanwhile.
UPDATE sandboxes
SET state = 'running', access_token_hash = @access_token_hash, access_token_sealed = @access_token_sealed,
    updated_at = @now::timestamptz
WHERE id = @id AND state = 'starting'
RETURNING *;

-- name: MarkSandboxFailed :exec
UPDATE sandboxes
SET state = 'error', error = @error, updated_at = @now::timestamptz
WHERE id = @id AND state = 'starting';

-- name: TransitionSandbox :one
-- Moves a sandbox to state `to` only from one of `from`. No row: it was not
-- in any of them (any more).
UPDATE sandboxes
SET state = @to_state, updated_at = @now::timestamptz
WHERE id = @id AND team_id = @team_id AND state = ANY(@from_states::text[])
RETURNING *;

-- name: StopSandbox :one
UPDATE sandboxes
SET state = 'stopped', stopped_at = @now::timestamptz, updated_at = @now::timestamptz
WHERE id = @id AND team_id = @team_id AND state <> 'stopped'
RETURNING *;

-- name: SetSandboxTimeout :one
UPDATE sandboxes
SET timeout_sec = @timeout_sec, on_timeout = @on_timeout, updated_at = @now::timestamptz
WHERE id = @id AND team_id = @team_id
RETURNING *;

-- name: SetSandboxNetwork :one
UPDATE sandboxes
SET network = @network, updated_at = @now::timestamptz
WHERE id = @id AND team_id = @team_id
RETURNING *;

-- name: SchedulableHosts :many
-- Online hosts the team may use, with what the store reserves on each:
-- every live sandbox holds its vCPUs; a hibernated one's memory is on disk
-- (so it reserves disk, not RAM); every live sandbox reserves its whole
-- disk_mb (its overlay may grow to it). Unexpired quota holds (forks and
-- resumes in flight) count as well.
SELECT h.id, h.team_id, h.type, h.status, h.cpus, h.memory_bytes,
       h.memory_available_bytes, h.load1, h.images, h.templates, h.snapshot_templates,
       h.disk_available_bytes, h.guest_memory_bytes, h.guest_memory_available_bytes,
       h.sandbox_disk_used_bytes,
       (coalesce(r.vcpus, 0) + coalesce(q.vcpus, 0))::int AS reserved_vcpus,
       (coalesce(r.memory_mb, 0) + coalesce(q.memory_mb, 0))::bigint AS reserved_memory_mb,
       (coalesce(r.disk_mb, 0) + coalesce(q.disk_mb, 0))::bigint AS reserved_disk_mb
FROM hosts h
LEFT JOIN (
    SELECT s.host_id,
           sum(s.vcpus) AS vcpus,
           sum(s.memory_mb) FILTER (WHERE s.state <> 'hibernated') AS memory_mb,
           sum(s.disk_mb) + coalesce(sum(s.memory_mb) FILTER (WHERE s.state = 'hibernated'), 0) AS disk_mb
    FROM sandboxes s
    WHERE s.host_id IS NOT NULL
      AND s.state IN ('starting', 'running', 'paused', 'hibernated', 'missing')
    GROUP BY s.host_id
) r ON r.host_id = h.id
LEFT JOIN (
    SELECT qh.host_id, sum(qh.vcpus) AS vcpus, sum(qh.memory_mb) AS memory_mb, sum(qh.disk_mb) AS disk_mb
    FROM quota_holds qh
    WHERE qh.host_id IS NOT NULL AND qh.expires_at > now()
    GROUP BY qh.host_id
) q ON q.host_id = h.id
WHERE h.status = 'online'
  AND (h.type = 'regular' OR h.team_id = @team_id)
ORDER BY h.id;

-- name: LockPlacement :exec
-- Serialises placement (read the hosts' reservations, insert the new
-- sandbox's row) across requests and replicas, so two creates cannot both
-- take a host's last room. Held for the transaction only: milliseconds.
SELECT pg_advisory_xact_lock(7427002);

-- name: SetSandboxEndAt :one
-- An absolute deadline (E2B's timeout); NULL clears it.
UPDATE sandboxes
SET end_at = sqlc.narg(end_at)::timestamptz, on_timeout = @on_timeout, updated_at = @now::timestamptz
WHERE id = @id AND team_id = @team_id
RETURNING *;

-- name: SetSandboxMemoryDropped :exec
-- Whether the sandbox's pause kept its memory (E2B's `memory` flag).
UPDATE sandboxes SET memory_dropped = @memory_dropped, updated_at = @now::timestamptz
WHERE id = @id AND team_id = @team_id;

-- name: ExpiredSandboxes :many
-- Running sandboxes whose absolute deadline passed, oldest first (the
-- lifetime sweeper's work list; each is then moved by a guarded update).
SELECT * FROM sandboxes
WHERE end_at IS NOT NULL AND end_at <= @now::timestamptz AND state = 'running'
ORDER BY end_at
LIMIT @max_rows;

-- name: RenewStartLeases :exec
-- The replica running these creates or forks is alive: updated_at is
-- their lease, renewed while the operation runs.
UPDATE sandboxes SET updated_at = @now::timestamptz
WHERE id = ANY(@ids::text[]) AND state = 'starting';

-- name: AbandonStartingSandbox :execrows
-- Fails a create or fork whose lease ran out, unless it was renewed or
-- finished since the sweeper looked.
UPDATE sandboxes
SET state = 'error', error = @error, updated_at = @now::timestamptz
WHERE id = @id AND state = 'starting' AND updated_at < @before::timestamptz;

-- name: StopStartingSandbox :execrows
-- A fork the host did not make: it never existed for the user, so it is
-- stopped (not listed) rather than in error.
UPDATE sandboxes
SET state = 'stopped', error = @error, stopped_at = @now::timestamptz, updated_at = @now::timestamptz
WHERE id = @id AND state = 'starting';

-- name: StaleStartingSandboxes :many
-- Creates and forks nobody finishes: their lease (updated_at, renewed
-- while the operation runs) ran out, e.g. the replica running them died.
-- The sweeper fails them.
SELECT * FROM sandboxes
WHERE state = 'starting' AND updated_at < @before::timestamptz
ORDER BY updated_at
LIMIT @max_rows;

-- name: SandboxSealedToken :one
-- The sealed access token (the envd proxy checks pre-signed URLs with it).
SELECT access_token_sealed FROM sandboxes WHERE id = @id;

-- name: ApplySandboxEvent :one
-- An agent's report of one sandbox's state change (hostreg). Applied only
-- to a sandbox on the reporting host, only when the report is newer than
-- the last one applied (agent_version), and never to a row the store has
-- stopped (stopped is final) or one still starting (its create is the
-- control plane's to finish). No row: not applied.
WITH old AS (
    SELECT o.id, o.state FROM sandboxes o
    WHERE o.id = @id::text AND o.host_id = @host_id::uuid
    FOR UPDATE
)
UPDATE sandboxes s
SET state = @state::text,
    agent_version = @version::bigint,
    error = CASE WHEN @state::text = 'error' THEN @error::text ELSE s.error END,
    memory_dropped = CASE WHEN @state::text IN ('running', 'paused', 'hibernated') THEN @memory_dropped::boolean
                          ELSE s.memory_dropped END,
    stopped_at = CASE WHEN @state::text = 'stopped' THEN @now::timestamptz ELSE s.stopped_at END,
    updated_at = @now::timestamptz
FROM old
WHERE s.id = old.id
  AND old.state IN ('running', 'paused', 'hibernated', 'error', 'missing')
  AND s.agent_version < @version::bigint
RETURNING s.id, old.state AS previous_state, s.state, s.team_id;

-- name: ApplyHostSandboxStates :many
-- A heartbeat's states (states[i] and versions[i] are ids[i]'s) repair
-- what a lost event left behind, by the same rule as ApplySandboxEvent:
-- only on the reporting host, only newer versions, never a stopped or
-- starting row (missing rows are ReconcileMissingSandboxes').
WITH old AS (
    SELECT o.id, o.state FROM sandboxes o
    WHERE o.host_id = @host_id::uuid AND o.id = ANY(@ids::text[])
    FOR UPDATE
), r AS (
    SELECT unnest(@ids::text[]) AS id, unnest(@states::text[]) AS state,
           unnest(@versions::bigint[]) AS version
)
UPDATE sandboxes s
SET state = r.state,
    agent_version = r.version,
    stopped_at = CASE WHEN r.state = 'stopped' THEN @now::timestamptz ELSE s.stopped_at END,
    updated_at = @now::timestamptz
FROM old, r
WHERE s.id = old.id AND r.id = old.id
  AND old.state IN ('running', 'paused', 'hibernated', 'error')
  AND s.agent_version < r.version
RETURNING s.id, old.state AS previous_state, s.state;

-- name: StopVanishedHostSandboxes :many
-- Sandboxes the store has running, paused or hibernated on a host that no
-- longer holds them (its destroy event was lost). Those created after
-- created_before are left alone: the agent may have listed its sandboxes
-- before their create finished.
UPDATE sandboxes
SET state = 'stopped', stopped_at = @now::timestamptz, updated_at = @now::timestamptz
WHERE host_id = @host_id::uuid
  AND state IN ('running', 'paused', 'hibernated')
  AND NOT (id = ANY(@present::text[]))
  AND created_at < @created_before
RETURNING id;

-- name: OrphanedHostSandboxes :many
-- Of the sandboxes a host holds, those whose rows say they are gone:
-- stopped, or in error while the host still runs them (a create or fork
-- given up). Only rows settled for a while, so an operation finishing
-- right now is not raced. The host is told to destroy them.
SELECT id FROM sandboxes
WHERE host_id = @host_id::uuid AND id = ANY(@ids::text[])
  AND (state = 'stopped' OR (state = 'error' AND id = ANY(@live_ids::text[])))
  AND updated_at < @before::timestamptz
ORDER BY id;

-- name: HeldHostSandboxes :many
-- Of ids, those the database places on the host and has not stopped: a
-- sandbox in error (its VMM died) is still the host's until deleted.
SELECT id FROM sandboxes
WHERE host_id = @host_id::uuid AND id = ANY(@ids::text[]) AND state <> 'stopped';
