-- +goose Up
-- Identity and tenancy.
CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    name          text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails compare case-insensitively.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE teams (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE team_members (
    team_id    uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user_idx ON team_members (user_id);

-- API keys are shown once; only a SHA-256 of the key is stored. prefix is
-- the first characters, to tell keys apart in listings.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id      uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    name         text NOT NULL DEFAULT '',
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_team_idx ON api_keys (team_id);

CREATE TABLE audit_logs (
    id            bigserial PRIMARY KEY,
    team_id       uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    actor_type    text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'host', 'system')),
    actor_id      text NOT NULL DEFAULT '',
    resource_type text NOT NULL,
    resource_id   text NOT NULL DEFAULT '',
    action        text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('success', 'failure')),
    detail        jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_team_idx ON audit_logs (team_id, id DESC);

-- The control plane's certificate authority. Replicas are stateless, so the
-- CA lives here: the first replica to start creates it.
CREATE TABLE cluster_ca (
    id         int PRIMARY KEY CHECK (id = 1),
    cert_pem   text NOT NULL,
    key_pem    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Hosts belong to the team that added them. A 'regular' host takes any
-- team's sandboxes; a 'byoc' host only its own team's.
CREATE TABLE hosts (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id                  uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    type                     text NOT NULL CHECK (type IN ('regular', 'byoc')),
    status                   text NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'online', 'unreachable', 'deleted')),
    address                  text NOT NULL DEFAULT '',
    arch                     text NOT NULL DEFAULT '',
    cpus                     int NOT NULL DEFAULT 0,
    memory_bytes             bigint NOT NULL DEFAULT 0,
    disk_bytes               bigint NOT NULL DEFAULT 0,
    vmm                      text NOT NULL DEFAULT '',
    accelerator              text NOT NULL DEFAULT '',
    kernel_version           text NOT NULL DEFAULT '',
    agent_version            text NOT NULL DEFAULT '',
    images                   text[] NOT NULL DEFAULT '{}',
    -- Templates (agent names) this host holds, and which have snapshots.
    templates                text[] NOT NULL DEFAULT '{}',
    snapshot_templates       text[] NOT NULL DEFAULT '{}',
    reserved_vcpus           int NOT NULL DEFAULT 0,
    reserved_memory_bytes    bigint NOT NULL DEFAULT 0,
    reserved_disk_bytes      bigint NOT NULL DEFAULT 0,
    memory_available_bytes   bigint NOT NULL DEFAULT 0,
    disk_available_bytes     bigint NOT NULL DEFAULT 0,
    load1                    double precision NOT NULL DEFAULT 0,
    registration_token_hash  bytea,
    registration_expires_at  timestamptz,
    credential_hash          bytea UNIQUE,
    credential_expires_at    timestamptz,
    certificate_expires_at   timestamptz,
    last_heartbeat_at        timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    deleted_at               timestamptz
);
CREATE INDEX hosts_team_idx ON hosts (team_id);
CREATE UNIQUE INDEX hosts_registration_token_key ON hosts (registration_token_hash)
    WHERE registration_token_hash IS NOT NULL;

-- Templates a team can create sandboxes from. team_id NULL: built in (the
-- base images every host has, e.g. 'minimal'). agent_name is the name on
-- the hosts (unique across teams); host_id is where a snapshot template's
-- files live.
CREATE TABLE templates (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id           uuid REFERENCES teams (id) ON DELETE CASCADE,
    name              text NOT NULL,
    agent_name        text NOT NULL UNIQUE,
    host_id           uuid REFERENCES hosts (id) ON DELETE SET NULL,
    source_sandbox_id text,
    snapshot          boolean NOT NULL DEFAULT false,
    disk_bytes        bigint NOT NULL DEFAULT 0,
    vcpus             int NOT NULL DEFAULT 0,
    memory_mb         int NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX templates_team_name_key ON templates (coalesce(team_id, '00000000-0000-0000-0000-000000000000'::uuid), name);

CREATE TABLE sandboxes (
    id                text PRIMARY KEY,
    team_id           uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    host_id           uuid REFERENCES hosts (id) ON DELETE SET NULL,
    template          text NOT NULL,
    state             text NOT NULL
                      CHECK (state IN ('starting', 'running', 'paused', 'hibernated', 'missing', 'stopped', 'error')),
    vcpus             int NOT NULL,
    memory_mb         int NOT NULL,
    disk_mb           int NOT NULL,
    timeout_sec       int NOT NULL,
    on_timeout        text NOT NULL CHECK (on_timeout IN ('kill', 'pause')),
    metadata          jsonb NOT NULL DEFAULT '{}',
    network           jsonb NOT NULL DEFAULT '{}',
    public_ports      int[] NOT NULL DEFAULT '{}',
    -- SHA-256 of the sandbox's access token (the proxy checks it).
    access_token_hash bytea,
    error             text NOT NULL DEFAULT '',
    forked_from       text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz
);
CREATE INDEX sandboxes_team_idx ON sandboxes (team_id, created_at DESC);
CREATE INDEX sandboxes_host_idx ON sandboxes (host_id) WHERE state NOT IN ('stopped', 'error');
CREATE INDEX sandboxes_metadata_idx ON sandboxes USING gin (metadata);

-- +goose Down
DROP TABLE sandboxes;
DROP TABLE templates;
DROP TABLE hosts;
DROP TABLE cluster_ca;
DROP TABLE audit_logs;
DROP TABLE api_keys;
DROP TABLE team_members;
DROP TABLE teams;
DROP TABLE users;
