-- Template builds (migration 00010): one row per version of a team's
-- template, with its log in template_build_logs.

-- name: NextTemplateVersion :one
SELECT (coalesce(max(version), 0) + 1)::int AS version
FROM template_builds WHERE team_id = @team_id AND template_name = @template_name;

-- name: InsertTemplateBuild :one
-- No row: that version exists (a concurrent build took it).
INSERT INTO template_builds (team_id, template_name, version, agent_name, host_id, status, from_ref,
                             recipe_file, steps, created_at, updated_at)
VALUES (@team_id, @template_name, @version, @agent_name, @host_id, 'building', @from_ref,
        @recipe_file, @steps, @now::timestamptz, @now::timestamptz)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: GetTemplateBuild :one
SELECT * FROM template_builds
WHERE id = @id AND team_id = @team_id AND template_name = @template_name;

-- name: ListTemplateBuilds :many
SELECT * FROM template_builds
WHERE team_id = @team_id AND template_name = @template_name
ORDER BY version DESC
LIMIT @max_rows;

-- name: ReadyTemplateVersion :one
-- A given version of a team's template, for `name:N`.
SELECT * FROM template_builds
WHERE team_id = @team_id AND template_name = @template_name AND version = @version AND status = 'ready';

-- name: CountBuildingTemplates :one
SELECT count(*) FROM template_builds WHERE team_id = @team_id AND status = 'building';

-- name: SetTemplateBuildProgress :exec
UPDATE template_builds
SET current_step = @current_step, steps = @steps, cached_steps = @cached_steps, updated_at = @now::timestamptz
WHERE id = @id AND status = 'building';

-- name: RenewTemplateBuilds :exec
-- The replica running these builds is alive: the sweeper leaves them.
UPDATE template_builds SET updated_at = @now::timestamptz
WHERE id = ANY(@ids::uuid[]) AND status = 'building';

-- name: FinishTemplateBuild :execrows
-- Ends a build once. No row: it had ended already (cancelled, or failed
-- by the sweeper).
UPDATE template_builds
SET status = @status, error = @error, error_code = @error_code, image_bytes = @image_bytes,
    disk_bytes = @disk_bytes, digest = @digest, snapshot = @snapshot, vcpus = @vcpus,
    memory_mb = @memory_mb, disk_mb = @disk_mb, steps = @steps, cached_steps = @cached_steps,
    finished_at = @now::timestamptz, updated_at = @now::timestamptz
WHERE id = @id AND status = 'building';

-- name: StaleTemplateBuilds :many
-- Builds whose control plane stopped renewing them (it died).
SELECT * FROM template_builds
WHERE status = 'building' AND updated_at < @before::timestamptz
ORDER BY updated_at
LIMIT @max_rows;

-- name: PublishBuiltTemplate :one
-- Points the team's template at a ready version (creating the template on
-- its first build). No row: the name is a snapshot template, or a newer
-- version is already current.
INSERT INTO templates (team_id, name, agent_name, host_id, snapshot, disk_bytes, vcpus, memory_mb,
                       status, build_id, created_at, updated_at)
VALUES (@team_id, @name, @agent_name, @host_id, @snapshot, @disk_bytes, @vcpus, @memory_mb,
        'ready', @build_id, @now::timestamptz, @now::timestamptz)
ON CONFLICT ((coalesce(team_id, '00000000-0000-0000-0000-000000000000'::uuid)), name) DO UPDATE
SET agent_name = excluded.agent_name, host_id = excluded.host_id, snapshot = excluded.snapshot,
    disk_bytes = excluded.disk_bytes, vcpus = excluded.vcpus, memory_mb = excluded.memory_mb,
    build_id = excluded.build_id, status = 'ready', updated_at = excluded.updated_at
WHERE templates.build_id IS NOT NULL
  AND (SELECT b.version FROM template_builds b WHERE b.id = templates.build_id) < @version::int
RETURNING *;

-- name: RetirableTemplateBuilds :many
-- A template's ready versions older than its newest @keep ready ones and
-- not its current one: their files go once no sandbox on their host uses
-- them.
SELECT b.* FROM template_builds b
WHERE b.team_id = @team_id AND b.template_name = @template_name AND b.status = 'ready'
  AND NOT EXISTS (SELECT 1 FROM templates t WHERE t.build_id = b.id)
  AND b.version <= (SELECT max(x.version) FROM template_builds x
                    WHERE x.team_id = b.team_id AND x.template_name = b.template_name AND x.status = 'ready') - @keep::int
ORDER BY b.version;

-- name: RetireTemplateBuild :exec
UPDATE template_builds SET status = 'retired', updated_at = @now::timestamptz
WHERE id = @id AND status = 'ready';

-- name: TeamTemplateBuildsOnHosts :many
-- Every version of a team's template that may still have files on a host
-- (for deleting the template).
SELECT * FROM template_builds
WHERE team_id = @team_id AND template_name = @template_name AND status IN ('building', 'ready');

-- name: DeleteTemplateBuilds :exec
DELETE FROM template_builds WHERE team_id = @team_id AND template_name = @template_name;

-- name: InsertTemplateBuildLogs :exec
-- A batch of lines (the arrays zip: one row per index).
INSERT INTO template_build_logs (build_id, seq, at, step, steps, phase, cached, text)
SELECT @build_id::uuid, unnest(@seqs::int[]), unnest(@ats::timestamptz[]), unnest(@step_nums::int[]),
       unnest(@step_totals::int[]), unnest(@phases::text[]), unnest(@cacheds::boolean[]), unnest(@texts::text[]);

-- name: TemplateBuildLogs :many
SELECT * FROM template_build_logs
WHERE build_id = @build_id AND seq >= @from_seq
ORDER BY seq
LIMIT @max_rows;

-- name: HostsWithTemplate :many
-- Hosts whose last heartbeat listed a template (its home and its copies).
SELECT id FROM hosts
WHERE @agent_name::text = ANY(templates) OR @agent_name::text = ANY(snapshot_templates);
