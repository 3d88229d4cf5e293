-- +goose Up
-- Per-team quotas (issue 11 hole 4). A NULL column means "the control
-- plane's default" (WRENN_TEAM_MAX_*), so changing a default reaches every
-- team that was not given its own value; 0 means unlimited.
CREATE TABLE team_limits (
    team_id       uuid PRIMARY KEY REFERENCES teams (id) ON DELETE CASCADE,
    max_sandboxes bigint CHECK (max_sandboxes >= 0),
    max_vcpus     bigint CHECK (max_vcpus >= 0),
    max_memory_mb bigint CHECK (max_memory_mb >= 0),
    max_disk_mb   bigint CHECK (max_disk_mb >= 0),
    max_templates bigint CHECK (max_templates >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Room claimed by an operation whose sandbox rows only exist once a host
-- answered (a fork: the agent names the new sandboxes; a resume from
-- hibernation: vCPUs and memory come back). Counted in the team's usage and,
-- with host_id, in the host's reservations, so concurrent requests cannot
-- all take the last room. Deleted when the operation ends; expires_at
-- bounds what a crashed replica leaves behind.
CREATE TABLE quota_holds (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id    uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    host_id    uuid REFERENCES hosts (id) ON DELETE CASCADE,
    sandboxes  bigint NOT NULL DEFAULT 0,
    vcpus      bigint NOT NULL DEFAULT 0,
    memory_mb  bigint NOT NULL DEFAULT 0,
    disk_mb    bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL
);
CREATE INDEX quota_holds_team_idx ON quota_holds (team_id);
CREATE INDEX quota_holds_host_idx ON quota_holds (host_id) WHERE host_id IS NOT NULL;

-- What the agent measures for admission (heartbeat): the tmpfs holding
-- guest RAM (size and free: a full one SIGBUSes VMMs) and the bytes the
-- sandboxes' disks and snapshots already occupy on WRENN_DIR's filesystem
-- (what is reserved but not yet written must fit in what is free).
ALTER TABLE hosts
    ADD COLUMN guest_memory_bytes           bigint NOT NULL DEFAULT 0,
    ADD COLUMN guest_memory_available_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN sandbox_disk_used_bytes      bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE hosts
    DROP COLUMN sandbox_disk_used_bytes,
    DROP COLUMN guest_memory_available_bytes,
    DROP COLUMN guest_memory_bytes;
DROP TABLE quota_holds;
DROP TABLE team_limits;
