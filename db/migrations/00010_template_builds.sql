-- Templates built from recipes (docs/templates.md).
--
-- A build makes one version of a team's template on one host. The first
-- ready build of a name creates the team's templates row; each later one
-- points that row at its own version (templates.agent_name, host_id,
-- build_id), so creates take the newest ready version while sandboxes of
-- older ones keep theirs. A build row renews updated_at while its control
-- plane runs it; the sweeper fails one whose control plane stopped.

-- +goose Up
CREATE TABLE template_builds (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id        uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    template_name  text NOT NULL,
    version        int NOT NULL CHECK (version > 0),
    -- The version's name on its host.
    agent_name     text NOT NULL UNIQUE,
    host_id        uuid REFERENCES hosts (id) ON DELETE SET NULL,
    status         text NOT NULL CHECK (status IN ('building', 'ready', 'failed', 'canceled', 'retired')),
    error          text,
    error_code     text,
    from_ref       text NOT NULL DEFAULT '',
    recipe_file    text NOT NULL,
    steps          int NOT NULL DEFAULT 0,
    cached_steps   int NOT NULL DEFAULT 0,
    current_step   int NOT NULL DEFAULT 0,
    image_bytes    bigint NOT NULL DEFAULT 0,
    disk_bytes     bigint NOT NULL DEFAULT 0,
    digest         text,
    snapshot       boolean NOT NULL DEFAULT false,
    vcpus          int NOT NULL DEFAULT 0,
    memory_mb      int NOT NULL DEFAULT 0,
    disk_mb        int NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    UNIQUE (team_id, template_name, version)
);
CREATE INDEX template_builds_building_idx ON template_builds (updated_at) WHERE status = 'building';

CREATE TABLE template_build_logs (
    build_id  uuid NOT NULL REFERENCES template_builds (id) ON DELETE CASCADE,
    seq       int NOT NULL,
    at        timestamptz NOT NULL,
    step      int NOT NULL DEFAULT 0,
    steps     int NOT NULL DEFAULT 0,
    phase     text NOT NULL,
    cached    boolean NOT NULL DEFAULT false,
    text      text NOT NULL,
    PRIMARY KEY (build_id, seq)
);

-- A built template's row names the build of its current version.
ALTER TABLE templates ADD COLUMN build_id uuid REFERENCES template_builds (id) ON DELETE SET NULL;

-- +goose Down
ALTER TABLE templates DROP COLUMN build_id;
DROP TABLE template_build_logs;
DROP TABLE template_builds;
