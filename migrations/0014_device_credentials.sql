-- Each device logs in to the broker with its device id as username and a secret of its own
-- (devices/credentials.py). Only the secret's hash is kept, in Mosquitto's own password-file
-- format (PBKDF2-SHA512: $7$<iterations>$<salt b64>$<hash b64>), so that the broker's password
-- file is written from these rows as they are. A device has at most one credential in force;
-- rotating revokes the old one in the same transaction, revoking keeps the row (who, when).
-- The broker's service accounts (ingest, alerts) are not here: their secrets come from the
-- environment of the process that writes the broker configuration.
CREATE TABLE device_credentials (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id      text NOT NULL REFERENCES devices (id),
    password_hash  text NOT NULL
        CHECK (password_hash ~ '^\$7\$[1-9][0-9]{0,8}\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$'),
    issued_at      timestamptz NOT NULL,
    issued_by      text NOT NULL,
    revoked_at     timestamptz,
    revoked_by     text,
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL)),
    CHECK (revoked_at IS NULL OR revoked_at >= issued_at)
);
CREATE UNIQUE INDEX device_credentials_in_force ON device_credentials (device_id)
    WHERE revoked_at IS NULL;
CREATE INDEX device_credentials_device ON device_credentials (device_id, issued_at);
