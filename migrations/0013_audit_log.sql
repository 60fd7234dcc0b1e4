-- Every look at and change of a citizen's data (api/audit.py, docs/access.md): who, in which
-- role, what, which citizen, when, why. Append-only: the processes' database roles may insert
-- and read it but not update or delete it (core/roles.py), and no one updates it. No foreign
-- keys: the record outlives the user and the citizen it names.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    -- One API request: a request looks at a citizen once, however many checks it makes.
    request_id  uuid NOT NULL,
    -- NULL for the local operator (sign-in not required); the name is kept as it was then.
    user_id     uuid,
    username    text,
    role        text NOT NULL,
    action      text NOT NULL CHECK (action IN ('read', 'search', 'export', 'change')),
    -- What kind of data: readings, alerts, devices, care, audit, fhir, …
    what        text NOT NULL,
    -- NULL for a search that found no citizen.
    citizen_id  uuid,
    purpose     text NOT NULL,
    route       text NOT NULL
);
CREATE UNIQUE INDEX audit_log_once_per_request ON audit_log (request_id, citizen_id)
    NULLS NOT DISTINCT;
CREATE INDEX audit_log_citizen ON audit_log (citizen_id, at);
CREATE INDEX audit_log_user ON audit_log (user_id, at);

-- Privileges already keep the processes from changing it; this keeps everyone from rewriting
-- a record (deleting old ones is the owner's retention job).
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
