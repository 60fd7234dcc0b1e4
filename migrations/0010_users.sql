-- People and integrations who sign in. The API trusts signed access tokens (api/auth/tokens.py),
-- so an external OpenID Connect provider can take over sign-in later; this table then keeps
-- only roles and relations. Passwords are argon2id hashes; failed sign-ins are counted in the
-- database, so the slow-down and the lock hold across every API process.
CREATE TABLE users (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username         text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{0,99}$'),
    display_name     text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    role             text NOT NULL CHECK (role IN ('administrator', 'nurse', 'project_lead',
                                                   'citizen', 'relative', 'service')),
    password_hash    text NOT NULL,
    disabled_at      timestamptz,
    created_at       timestamptz NOT NULL
);

-- Failed sign-ins in a row per username, whether or not a user has it: an unknown name is
-- slowed down and locked exactly like a known one, so the answers do not tell which exist.
CREATE TABLE sign_in_failures (
    username        text PRIMARY KEY,
    failures        integer NOT NULL CHECK (failures > 0),
    last_failed_at  timestamptz NOT NULL,
    -- No sign-in is tried before this time (the slow-down, then the lock).
    blocked_until   timestamptz
);

-- Refresh tokens are kept only as a SHA-256 of the token. Each is used once: refreshing
-- revokes it and issues the next of its family; a revoked one presented again revokes the
-- whole family (someone else holds a copy).
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    family      uuid NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
