-- Who may see which citizen (api/access.py, docs/access.md): nurses are members of care teams
-- and see those teams' citizens; a citizen's own user names the citizen; a relative sees what
-- a proxy (fuldmagt) grants, of the kinds it names, while it is in force and measured within it.
CREATE TABLE team_members (
    user_id       uuid NOT NULL REFERENCES users (id),
    care_team_id  uuid NOT NULL REFERENCES care_teams (id),
    added_at      timestamptz NOT NULL,
    PRIMARY KEY (user_id, care_team_id)
);
CREATE INDEX team_members_team ON team_members (care_team_id);

-- Only a user with the role citizen names a citizen, and at most one user names each.
ALTER TABLE users ADD COLUMN citizen_id uuid UNIQUE REFERENCES citizens (id),
    ADD CONSTRAINT users_citizen_role CHECK (citizen_id IS NULL OR role = 'citizen');

CREATE TABLE proxies (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    citizen_id   uuid NOT NULL REFERENCES citizens (id),
    relative_id  uuid NOT NULL REFERENCES users (id),
    -- What it grants: readings, alerts, devices, care (plans, thresholds, pauses, team).
    kinds        text[] NOT NULL CHECK (cardinality(kinds) > 0
                     AND kinds <@ ARRAY['readings', 'alerts', 'devices', 'care']),
    -- In force during `valid`, and only data measured within it is shown.
    valid        tstzrange NOT NULL CHECK (NOT isempty(valid) AND NOT lower_inf(valid)),
    granted_by   text NOT NULL,
    granted_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX proxies_relative ON proxies (relative_id);
CREATE INDEX proxies_citizen ON proxies (citizen_id);
