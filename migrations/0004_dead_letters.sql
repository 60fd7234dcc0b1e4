-- What ingest could not store, with the reason, so nothing a device sent is lost silently.
-- One row per distinct message (a redelivery counts, it is not a new row), holding the whole
-- payload up to the protocol's size limit so it can be replayed; the reasons of refused
-- items are child rows. Details name fields and limits, never values. Purged after the
-- retention period (TELECARE_DEAD_LETTER_RETENTION_DAYS).

CREATE TABLE dead_letters (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at       timestamptz NOT NULL,
    last_received_at  timestamptz NOT NULL,
    deliveries        integer NOT NULL DEFAULT 1,
    topic             text NOT NULL,
    device_id         text,
    -- A message-level reason, or 'items_rejected' when the message was read and only some of
    -- its items were refused (see dead_letter_items).
    reason            text NOT NULL,
    detail            text NOT NULL,
    payload           bytea NOT NULL,
    payload_bytes     integer NOT NULL,
    payload_sha256    bytea NOT NULL,
    UNIQUE (payload_sha256, payload_bytes, topic)
);
CREATE INDEX dead_letters_last_received ON dead_letters (last_received_at DESC);
CREATE INDEX dead_letters_device ON dead_letters (device_id, received_at DESC);

CREATE TABLE dead_letter_items (
    dead_letter_id  bigint NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
    item_index      integer NOT NULL,
    seq             bigint,
    reason          text NOT NULL,
    detail          text NOT NULL,
    PRIMARY KEY (dead_letter_id, item_index)
);
CREATE INDEX dead_letter_items_reason ON dead_letter_items (reason);
