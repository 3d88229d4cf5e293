-- Templates: built-in ones are the base images online hosts report; a
-- team's own are rows here (agent_name is the name on the host).

-- name: BuiltinTemplates :many
-- Base images on the online hosts the team may use. Never a snapshot
-- template, even if an agent (an old one, or a lying one) reports it as an
-- image: not one the host itself lists as a snapshot, and not the host
-- name of any team's template. (A team's own name for its template is not
-- excluded: a team could otherwise hide a base image from every team by
-- naming a template after it.)
SELECT img::text AS name, min(h.created_at)::timestamptz AS created_at
FROM hosts h, unnest(h.images) AS img
WHERE h.status = 'online'
  AND (h.type = 'regular' OR h.team_id = @team_id)
  AND NOT img = ANY (h.snapshot_templates)
  AND NOT EXISTS (
    SELECT 1 FROM templates t
    WHERE t.team_id IS NOT NULL AND t.agent_name = img)
  AND NOT EXISTS (SELECT 1 FROM template_builds b WHERE b.agent_name = img)
GROUP BY img
ORDER BY img;

-- name: InsertTemplate :one
-- No row: the team already has a template of that name.
-- A snapshot template starts pending (see MarkTemplateReady).
INSERT INTO templates (team_id, name, agent_name, host_id, source_sandbox_id, snapshot,
                       vcpus, memory_mb, status, created_at, updated_at)
VALUES (@team_id, @name, @agent_name, @host_id, @source_sandbox_id, @snapshot,
        @vcpus, @memory_mb, @status, @now::timestamptz, @now::timestamptz)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: MarkTemplateReady :execrows
-- Its host made it. No row: the sweeper gave it up meanwhile.
UPDATE templates SET status = 'ready', disk_bytes = @disk_bytes, updated_at = @now::timestamptz
WHERE id = @id AND status = 'pending';

-- name: RenewTemplateLeases :exec
-- The replica making these templates is alive: the sweeper leaves them.
UPDATE templates SET updated_at = @now::timestamptz
WHERE id = ANY(@ids::uuid[]) AND status = 'pending';

-- name: StalePendingTemplates :many
-- Templates whose maker stopped renewing their lease (it died).
SELECT * FROM templates
WHERE status = 'pending' AND updated_at < @before::timestamptz
ORDER BY updated_at
LIMIT @max_rows;

-- name: DeleteStalePendingTemplate :execrows
-- Gives up a template nobody finished, unless its lease was renewed or it
-- became ready since the sweeper looked.
DELETE FROM templates
WHERE id = @id AND status = 'pending' AND updated_at < @before::timestamptz;

-- name: GetTeamTemplate :one
SELECT * FROM templates WHERE team_id = @team_id::uuid AND name = @name;

-- name: ListTeamTemplates :many
SELECT * FROM templates WHERE team_id = @team_id::uuid ORDER BY name;

-- name: DeleteTemplate :exec
DELETE FROM templates WHERE id = @id;
