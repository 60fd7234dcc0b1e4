-- Telecare's own maintenance jobs (devices/maintenance.py): compressing old readings chunks on
-- TimescaleDB, creating monthly partitions ahead on plain PostgreSQL, purging expired dead
-- letters. TimescaleDB's background scheduler cannot be trusted to run its policies (on some
-- PostgreSQL minors it fails every job), so these run from Telecare and each job's last outcome
-- is kept here for readiness and metrics to report a job that fails or stopped running.
-- One row per job, updated by every run; an error keeps its class and SQLSTATE only: a
-- message can quote the data.

CREATE TABLE maintenance_jobs (
    job                  text PRIMARY KEY,
    last_run_at          timestamptz NOT NULL,
    last_success_at      timestamptz,
    -- What the last successful run did, counted in `unit` (chunks, partitions, rows).
    last_done            bigint NOT NULL DEFAULT 0 CHECK (last_done >= 0),
    unit                 text NOT NULL,
    last_error_at        timestamptz,
    last_error_class     text,
    last_error_sqlstate  text,
    -- Failed runs since the last success: 0 means the job is healthy.
    failures             integer NOT NULL DEFAULT 0 CHECK (failures >= 0)
);
