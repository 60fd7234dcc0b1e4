-- Pilots of welfare technology (docs/access.md, "Project leads"): which citizens take part
-- and when, and which project leads lead each. A project lead sees only pseudonymised
-- aggregates of the pilots they lead (pilots/); the pseudonym key is never in the database.

CREATE TABLE pilots (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    -- When the pilot runs; an open upper bound: until decided.
    period       tstzrange NOT NULL CHECK (NOT isempty(period) AND NOT lower_inf(period)),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL
);

-- A citizen takes part in a pilot for a period (consent given, equipment installed), and
-- may leave and join again later: enrolments of one citizen in one pilot never overlap.
-- Per citizen rather than per care team: a pilot is consented to one citizen at a time, a
-- team holds citizens in and out of it (and a control group), and a citizen who moves team
-- stays in the pilot.
CREATE TABLE pilot_enrolments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pilot_id     uuid NOT NULL REFERENCES pilots (id),
    citizen_id   uuid NOT NULL REFERENCES citizens (id),
    valid        tstzrange NOT NULL CHECK (NOT isempty(valid) AND NOT lower_inf(valid)),
    enrolled_by  text NOT NULL,
    enrolled_at  timestamptz NOT NULL,
    EXCLUDE USING gist (pilot_id WITH =, citizen_id WITH =, valid WITH &&)
);
CREATE INDEX pilot_enrolments_citizen ON pilot_enrolments (citizen_id);

-- Who leads a pilot: users with the role project_lead (checked when added, and again when
-- they ask: a user whose role changed leads nothing).
CREATE TABLE pilot_leads (
    pilot_id  uuid NOT NULL REFERENCES pilots (id),
    user_id   uuid NOT NULL REFERENCES users (id),
    added_by  text NOT NULL,
    added_at  timestamptz NOT NULL,
    PRIMARY KEY (pilot_id, user_id)
);
CREATE INDEX pilot_leads_user ON pilot_leads (user_id);
