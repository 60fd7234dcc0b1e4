-- The one place where Telecare chooses its time-series storage, once, at migration time.
-- TimescaleDB when the extension is installed and preloaded (or when asked for explicitly),
-- natively range-partitioned PostgreSQL otherwise. The runner passes the operator's wish
-- (TELECARE_STORAGE: auto | timescaledb | postgres) in the setting telecare.storage.

CREATE TABLE storage_backend (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    backend    text NOT NULL CHECK (backend IN ('timescaledb', 'postgres')),
    chosen_at  timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE
    wish text := coalesce(nullif(current_setting('telecare.storage', true), ''), 'auto');
    -- Listed is not enough: the library must also be preloaded, or CREATE EXTENSION fails.
    available boolean := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
        AND current_setting('shared_preload_libraries') LIKE '%timescaledb%';
    chosen text;
BEGIN
    IF wish = 'timescaledb' AND NOT available THEN
        RAISE EXCEPTION 'TELECARE_STORAGE=timescaledb, but the timescaledb extension is not installed and preloaded on this server';
    END IF;
    chosen := CASE WHEN wish = 'postgres' THEN 'postgres'
                   WHEN available THEN 'timescaledb'
                   ELSE 'postgres' END;
    IF chosen = 'timescaledb' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    END IF;
    INSERT INTO storage_backend (backend) VALUES (chosen);
END $$;

CREATE FUNCTION telecare_storage_backend() RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT backend FROM storage_backend $$;

-- Exclusion constraints on (device, validity interval) need gist on plain equality.
CREATE EXTENSION IF NOT EXISTS btree_gist;
