-- +goose Up
-- Platform rights are explicit (issue 11). Before, the first user to sign
-- up became the platform admin and every API key they made, in any team,
-- carried platform rights.
--
-- Existing installs: users keep their platform_admin flag (wrenn-cp logs
-- the platform admins at start-up, and `wrenn-cp admin --demote` removes
-- one); API keys lose platform rights, which from now on only a key
-- created with "platform": true by a platform admin's session carries.
ALTER TABLE api_keys ADD COLUMN platform boolean NOT NULL DEFAULT false;

-- Invitations to join a team at signup (WRENN_SIGNUP=invite). Only a
-- SHA-256 of the one-time token is stored.
CREATE TABLE team_invites (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id    uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    email      text NOT NULL,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    token_hash bytea NOT NULL UNIQUE,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    used_by    uuid REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX team_invites_team_idx ON team_invites (team_id);

-- +goose Down
DROP TABLE team_invites;
ALTER TABLE api_keys DROP COLUMN platform;
