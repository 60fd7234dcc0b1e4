-- The readings time series. Natural key: device + metric + measured time, so a redelivered
-- reading is stored once. Both the device's measured time and our received time are kept.

DO $$
DECLARE
    columns text := $cols$(
        device_id    text NOT NULL,
        metric       text NOT NULL,
        measured_at  timestamptz NOT NULL,
        citizen_id   uuid NOT NULL,
        value        double precision NOT NULL,
        seq          bigint NOT NULL,
        received_at  timestamptz NOT NULL,
        late         boolean NOT NULL,
        PRIMARY KEY (device_id, metric, measured_at)
    )$cols$;
BEGIN
    IF telecare_storage_backend() = 'timescaledb' THEN
        EXECUTE 'CREATE TABLE readings ' || columns;
        PERFORM create_hypertable('readings', by_range('measured_at', INTERVAL '7 days'));
        -- Compressed chunks are queried per citizen and metric, newest first.
        ALTER TABLE readings SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'citizen_id, metric',
            timescaledb.compress_orderby = 'measured_at DESC'
        );
        PERFORM add_compression_policy('readings', INTERVAL '30 days');
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
CREATE TABLE device_events (
    device_id    text NOT NULL,
    kind         text NOT NULL,
    measured_at  timestamptz NOT NULL,
    citizen_id   uuid NOT NULL,
    seq          bigint NOT NULL,
    received_at  timestamptz NOT NULL,
    late         boolean NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (device_id, kind, measured_at)
);
CREATE INDEX device_events_citizen_time ON device_events (citizen_id, measured_at DESC);
