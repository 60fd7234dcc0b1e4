-- The readings time series. Identity: device + metric + measured time + the device's
-- sequence number, so a redelivered reading is stored once and two different measurements at
-- the same instant are both stored (ingest refuses a redelivery whose content differs).
-- Both the device's measured time and our received time are kept, and why a reading arrived
-- late: held by the device (offline) or in transit (waiting at the broker or for Telecare).

DO $$
DECLARE
    columns text := $cols$(
        device_id      text NOT NULL,
        metric         text NOT NULL,
        measured_at    timestamptz NOT NULL,
        seq            bigint NOT NULL,
        citizen_id     uuid NOT NULL,
        value          double precision NOT NULL,
        received_at    timestamptz NOT NULL,
        sent_at        timestamptz,
        late           boolean NOT NULL,
        delay_cause    text CHECK (delay_cause IN ('device', 'transit', 'unknown')),
        quality        text NOT NULL DEFAULT 'valid' CHECK (quality IN ('valid', 'implausible')),
        clock_suspect  boolean NOT NULL DEFAULT false,
        PRIMARY KEY (device_id, metric, measured_at, seq)
    )$cols$;
BEGIN
    IF telecare_storage_backend() = 'timescaledb' THEN
        EXECUTE 'CREATE TABLE readings ' || columns;
        PERFORM create_hypertable('readings', by_range('measured_at', INTERVAL '7 days'));
        -- Compressed chunks are queried per citizen and metric, newest first; every column
        -- of the primary key is a segment or order column, so idempotent inserts into
        -- compressed chunks can check the key without decompressing whole segments.
        ALTER TABLE readings SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'citizen_id, metric, device_id',
            timescaledb.compress_orderby = 'measured_at DESC, seq'
        );
        -- No add_compression_policy: TimescaleDB's job scheduler fails every job on some
        -- PostgreSQL minors, silently. Telecare compresses chunks itself, and records it
        -- (devices/maintenance.py, run hourly by `telecare ingest` and `telecare maintain`).
    ELSE
        EXECUTE 'CREATE TABLE readings ' || columns || ' PARTITION BY RANGE (measured_at)';
        -- Catches what no monthly partition covers (a device with a wildly wrong clock):
        -- an insert never fails for want of a partition.
        CREATE TABLE readings_default PARTITION OF readings DEFAULT;
    END IF;
END $$;

CREATE INDEX readings_citizen_metric_time ON readings (citizen_id, metric, measured_at DESC);

-- Monthly partitions (plain PostgreSQL only; a no-op on TimescaleDB, which makes its chunks).
-- A month whose rows already sit in the default partition is left there rather than failing.
CREATE FUNCTION telecare_ensure_reading_partitions(p_from timestamptz, p_to timestamptz)
    RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month timestamp := date_trunc('month', p_from AT TIME ZONE 'UTC');
    lo timestamptz;
    hi timestamptz;
    part text;
    created integer := 0;
BEGIN
    IF telecare_storage_backend() <> 'postgres' THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('telecare_ensure_reading_partitions'));
    WHILE (month AT TIME ZONE 'UTC') < p_to LOOP
        lo := month AT TIME ZONE 'UTC';
        hi := (month + INTERVAL '1 month') AT TIME ZONE 'UTC';
        part := 'readings_' || to_char(month, 'YYYY_MM');
        IF to_regclass(part) IS NULL AND NOT EXISTS (
            SELECT 1 FROM readings_default WHERE measured_at >= lo AND measured_at < hi
        ) THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                           part, lo, hi);
            created := created + 1;
        END IF;
        month := month + INTERVAL '1 month';
    END LOOP;
    RETURN created;
END $$;

SELECT telecare_ensure_reading_partitions(now() - INTERVAL '13 months', now() + INTERVAL '3 months');

-- Events: button presses, sensor events and screen answers. Far fewer rows than readings.
-- Identity: device + measured time + sequence number (three answers with one timestamp, or a
-- door opening and closing within a second, are different events).
CREATE TABLE device_events (
    device_id      text NOT NULL,
    measured_at    timestamptz NOT NULL,
    seq            bigint NOT NULL,
    kind           text NOT NULL,
    citizen_id     uuid NOT NULL,
    received_at    timestamptz NOT NULL,
    sent_at        timestamptz,
    late           boolean NOT NULL,
    delay_cause    text CHECK (delay_cause IN ('device', 'transit', 'unknown')),
    clock_suspect  boolean NOT NULL DEFAULT false,
    data           jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (device_id, measured_at, seq)
);
CREATE INDEX device_events_citizen_time ON device_events (citizen_id, measured_at DESC);
