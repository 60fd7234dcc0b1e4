-- Citizens, devices, who had which device when, and what each device last told us about itself.

CREATE TABLE citizens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    display_name  text NOT NULL,
    conditions    text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    id             text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    kind           text NOT NULL,
    model          text NOT NULL,
    serial         text NOT NULL UNIQUE,
    registered_at  timestamptz NOT NULL DEFAULT now()
);

-- A reading belongs to the citizen who had the device at its measured time, so pairings are
-- intervals that may not overlap for one device. An open upper bound means "still paired".
CREATE TABLE device_pairings (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text NOT NULL REFERENCES devices (id),
    citizen_id  uuid NOT NULL REFERENCES citizens (id),
    valid       tstzrange NOT NULL CHECK (NOT isempty(valid) AND NOT lower_inf(valid)),
    EXCLUDE USING gist (device_id WITH =, valid WITH &&)
);
CREATE INDEX device_pairings_citizen ON device_pairings (citizen_id);

-- A device's state as its messages tell it. Ordered by our receive time, never by the
-- device's clock: a status stamped in year 9999 must not freeze the row.
CREATE TABLE device_status (
    device_id           text PRIMARY KEY REFERENCES devices (id),
    online              boolean,
    -- When a status message (or the last will) last set `online`; a reading received
    -- later marks the device online again, one received earlier does not.
    status_received_at  timestamptz,
    last_seen_at        timestamptz,
    battery_pct         real,
    signal_dbm          real,
    firmware            text,
    status_reported_at  timestamptz,
    -- The device clock minus ours, as last estimated from its messages (sent_at, reported_at),
    -- and whether it is beyond what transit delays can explain.
    clock_offset_s      double precision,
    clock_suspect       boolean NOT NULL DEFAULT false,
    clock_checked_at    timestamptz,
    updated_at          timestamptz NOT NULL
);

-- Readings and events re-attributed when a pairing was backdated over data already stored
-- (devices/service.py pair_device): what moved, from whom to whom, when and by whom.
CREATE TABLE attribution_changes (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id       text NOT NULL REFERENCES devices (id),
    from_citizen    uuid NOT NULL REFERENCES citizens (id),
    to_citizen      uuid NOT NULL REFERENCES citizens (id),
    measured_from   timestamptz NOT NULL,
    readings_moved  integer NOT NULL,
    events_moved    integer NOT NULL,
    changed_at      timestamptz NOT NULL,
    changed_by      text NOT NULL
);
CREATE INDEX attribution_changes_device ON attribution_changes (device_id, changed_at);
