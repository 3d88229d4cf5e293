-- Hosts: the REST resource, agent registration and heartbeats, and the host
-- monitor. Every state change is one statement with its precondition in the
-- WHERE clause, so several control-plane replicas never race.

-- name: CreateHost :one
INSERT INTO hosts (team_id, type, registration_token_hash, registration_expires_at)
VALUES (@team_id, @type, @registration_token_hash, @registration_expires_at::timestamptz)
RETURNING *;

-- name: GetTeamHost :one
-- Deleted hosts are gone for the REST API.
SELECT sqlc.embed(hosts),
       (SELECT count(*) FROM sandboxes s WHERE s.host_id = hosts.id AND s.state = 'running')::int AS sandboxes_running
FROM hosts
WHERE hosts.id = @id AND hosts.team_id = @team_id AND hosts.status <> 'deleted';

-- name: ListTeamHosts :many
SELECT sqlc.embed(hosts),
       (SELECT count(*) FROM sandboxes s WHERE s.host_id = hosts.id AND s.state = 'running')::int AS sandboxes_running
FROM hosts
WHERE hosts.team_id = @team_id AND hosts.status <> 'deleted'
ORDER BY hosts.created_at, hosts.id;

-- name: SetHostRegistrationToken :one
-- A new one-time token replaces any earlier one.
UPDATE hosts
SET registration_token_hash = @registration_token_hash,
    registration_expires_at = @registration_expires_at::timestamptz
WHERE id = @id AND team_id = @team_id AND status <> 'deleted'
RETURNING *;

-- name: LockTeamHost :one
-- Taken by a deletion so that counting and stopping its sandboxes and
-- marking it deleted happen under one lock.
SELECT id FROM hosts
WHERE id = @id AND team_id = @team_id AND status <> 'deleted'
FOR UPDATE;

-- name: CountActiveHostSandboxes :one
SELECT count(*)::int FROM sandboxes
WHERE host_id = @host_id::uuid
  AND state IN ('starting', 'running', 'paused', 'hibernated', 'missing');

-- name: StopActiveHostSandboxes :many
UPDATE sandboxes
SET state = 'stopped', stopped_at = @now::timestamptz, updated_at = @now::timestamptz
WHERE host_id = @host_id::uuid
  AND state IN ('starting', 'running', 'paused', 'hibernated', 'missing')
RETURNING id;

-- name: MarkHostDeleted :exec
-- The credential hash is kept so the agent's next heartbeat learns that
-- its host was deleted (and stops serving) instead of being told that its
-- credential is wrong.
UPDATE hosts
SET status = 'deleted', deleted_at = @now::timestamptz,
    registration_token_hash = NULL, registration_expires_at = NULL
WHERE id = @id;

-- name: GetHostByRegistrationToken :one
SELECT id, status, type FROM hosts
WHERE registration_token_hash = @registration_token_hash
  AND registration_expires_at > @now::timestamptz
  AND status <> 'deleted';

-- name: RegisterHost :one
-- Consumes the registration token: only one caller can win it.
UPDATE hosts
SET registration_token_hash = NULL,
    registration_expires_at = NULL,
    status = 'online',
    address = @address,
    arch = @arch,
    cpus = @cpus,
    memory_bytes = @memory_bytes,
    disk_bytes = @disk_bytes,
    vmm = @vmm,
    accelerator = @accelerator,
    kernel_version = @kernel_version,
    agent_version = @agent_version,
    images = @images,
    credential_hash = @credential_hash,
    credential_expires_at = @credential_expires_at::timestamptz,
    certificate_expires_at = @certificate_expires_at::timestamptz,
    last_heartbeat_at = @now::timestamptz
WHERE id = @id
  AND registration_token_hash = @registration_token_hash
  AND registration_expires_at > @now::timestamptz
  AND status <> 'deleted'
RETURNING id;

-- name: GetHostByCredential :one
SELECT id, team_id, status, address, arch, cpus, memory_bytes, disk_bytes, vmm,
       accelerator, kernel_version, agent_version, images,
       credential_expires_at, certificate_expires_at
FROM hosts
WHERE credential_hash = @credential_hash;

-- name: HeartbeatHost :one
-- Any heartbeat brings an unreachable host back online. Returns the status
-- the host had before.
UPDATE hosts
SET status = 'online',
    last_heartbeat_at = @now::timestamptz,
    arch = @arch,
    cpus = @cpus,
    memory_bytes = @memory_bytes,
    disk_bytes = @disk_bytes,
    vmm = @vmm,
    accelerator = @accelerator,
    kernel_version = @kernel_version,
    agent_version = @agent_version,
    images = @images,
    templates = @templates,
    snapshot_templates = @snapshot_templates,
    reserved_vcpus = @reserved_vcpus,
    reserved_memory_bytes = @reserved_memory_bytes,
    reserved_disk_bytes = @reserved_disk_bytes,
    memory_available_bytes = @memory_available_bytes,
    disk_available_bytes = @disk_available_bytes,
    load1 = @load1,
    guest_memory_bytes = @guest_memory_bytes,
    guest_memory_available_bytes = @guest_memory_available_bytes,
    sandbox_disk_used_bytes = @sandbox_disk_used_bytes
FROM (SELECT h.id, h.status FROM hosts h WHERE h.id = @id FOR UPDATE) AS old
WHERE hosts.id = old.id
  AND hosts.credential_hash = @credential_hash
  AND hosts.status IN ('online', 'unreachable')
RETURNING old.status AS previous_status, hosts.certificate_expires_at, hosts.credential_expires_at;

-- name: RenewHostCredential :one
-- Rotates the credential: the one the request came with stops working.
UPDATE hosts
SET credential_hash = @new_credential_hash,
    credential_expires_at = @credential_expires_at::timestamptz,
    certificate_expires_at = @certificate_expires_at::timestamptz
WHERE id = @id
  AND credential_hash = @credential_hash
  AND status IN ('online', 'unreachable')
RETURNING id;

-- name: ReconcileMissingSandboxes :many
-- After a host comes back: its missing sandboxes that it still holds take
-- the state the agent reports (states[i] is present[i]'s), the rest are
-- gone.
UPDATE sandboxes
SET state = CASE WHEN array_position(@present::text[], id) IS NULL THEN 'stopped'
                 ELSE (@states::text[])[array_position(@present::text[], id)] END,
    stopped_at = CASE WHEN array_position(@present::text[], id) IS NULL
                        OR (@states::text[])[array_position(@present::text[], id)] IN ('stopped', 'error')
                      THEN @now::timestamptz ELSE stopped_at END,
    updated_at = @now::timestamptz
WHERE host_id = @host_id::uuid AND state = 'missing'
RETURNING id, state;

-- name: StopVanishedSandboxes :many
-- Sandboxes the database thinks run on a host that does not hold them.
-- Those created after created_before are left alone: the agent may have
-- listed its sandboxes before their create finished.
UPDATE sandboxes
SET state = 'stopped', stopped_at = @now::timestamptz, updated_at = @now::timestamptz
WHERE host_id = @host_id::uuid
  AND state = 'running'
  AND NOT (id = ANY(@present::text[]))
  AND created_at < @created_before
RETURNING id;

-- name: KnownHostSandboxes :many
-- Of ids, those the database places on the host and has not stopped.
SELECT id FROM sandboxes
WHERE host_id = @host_id::uuid AND id = ANY(@ids::text[]) AND state NOT IN ('stopped', 'error');

-- name: MarkHostsUnreachable :many
-- The host monitor's pass: online hosts silent since before cutoff become
-- unreachable and their running or starting sandboxes missing, in one
-- statement (row locks make concurrent replicas and heartbeats safe: a
-- heartbeat that commits first moves last_heartbeat_at past the cutoff).
WITH lost AS (
    UPDATE hosts
    SET status = 'unreachable'
    WHERE status = 'online'
      AND coalesce(last_heartbeat_at, created_at) < @cutoff::timestamptz
    RETURNING id, team_id
), missing AS (
    UPDATE sandboxes s
    SET state = 'missing', updated_at = @now::timestamptz
    FROM lost
    WHERE s.host_id = lost.id AND s.state IN ('running', 'starting')
    RETURNING s.id, s.host_id
)
SELECT lost.id, lost.team_id,
       (SELECT count(*) FROM missing m WHERE m.host_id = lost.id)::int AS sandboxes_missing
FROM lost;

-- name: GetHostAddress :one
SELECT status, address, type FROM hosts WHERE id = @id;

-- name: StopLostSandboxes :many
-- DESIGN §6: sandboxes missing on a host that stayed unreachable since
-- before cutoff are given up (stopped). Paused and hibernated ones keep
-- their state: their files may come back with the host.
UPDATE sandboxes s
SET state = 'stopped', stopped_at = @now::timestamptz, updated_at = @now::timestamptz,
    error = 'host unreachable since ' || to_char(h.last_heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM hosts h
WHERE s.host_id = h.id AND s.state = 'missing'
  AND h.status = 'unreachable'
  AND coalesce(h.last_heartbeat_at, h.created_at) < @cutoff::timestamptz
RETURNING s.id, s.host_id;
