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

CREATE TABLE device_status (
    device_id           text PRIMARY KEY REFERENCES devices (id),
    online              boolean,
    last_seen_at        timestamptz,
    battery_pct         real,
    signal_dbm          real,
    firmware            text,
    status_reported_at  timestamptz,
    updated_at          timestamptz NOT NULL
);
