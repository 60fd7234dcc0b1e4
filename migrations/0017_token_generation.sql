-- Access tokens carry the generation of their user's credentials (claim `gen`, api/auth/tokens.py)
-- and the API compares it with this column on every call (api/deps.py): a new password or
-- disabling the user counts it up, so every access token issued before ends at once instead of
-- at its expiry. Enabling the user again does not count it back: those tokens stay dead.
ALTER TABLE users ADD COLUMN token_generation integer NOT NULL DEFAULT 0
    CHECK (token_generation >= 0);
