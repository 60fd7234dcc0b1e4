-- What ingest could not store, with the reason, so nothing a device sent is lost silently.
-- The raw payload is kept up to a bound; its size and hash are kept whole.

CREATE TABLE dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at     timestamptz NOT NULL,
    topic           text NOT NULL,
    device_id       text,
    seq             bigint,
    reason          text NOT NULL,
    detail          text NOT NULL,
    payload         bytea NOT NULL,
    payload_bytes   integer NOT NULL,
    payload_sha256  bytea NOT NULL
);
-- A redelivered bad message is recorded once.
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (payload_sha256, topic, reason, coalesce(seq, -1));
CREATE INDEX dead_letters_received ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_device ON dead_letters (device_id, received_at DESC);
