-- Replay and what-if (alerts/replay.py): the production rules and the pure lifecycle run over
-- a stored period as if it were live, on the measured-time clock. Each run writes its
-- findings and alerts here, apart from the live tables: no trigger, no outbox, no NOTIFY,
-- so a replay reaches nobody.

CREATE TABLE replay_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    period        tstzrange NOT NULL CHECK (NOT isempty(period) AND NOT lower_inf(period)
                                            AND NOT upper_inf(period)),
    -- NULL: every citizen with readings or events in the period.
    citizen_ids   uuid[],
    -- Proposed bands by metric ({metric: {alert_low, warning_low, ...}}); NULL: those in force.
    proposed      jsonb,
    -- Measured-time seconds between ticks of the time-driven rules; NULL: no ticks.
    tick_s        double precision CHECK (tick_s > 0),
    requested_by  text NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    citizens      integer NOT NULL DEFAULT 0,
    items         integer NOT NULL DEFAULT 0,
    findings      integer NOT NULL DEFAULT 0,
    alerts        integer NOT NULL DEFAULT 0
);

-- Every finding the rules returned in the run, keyed as alert_findings is.
CREATE TABLE replay_findings (
    run_id             bigint NOT NULL REFERENCES replay_runs (id) ON DELETE CASCADE,
    citizen_id         uuid NOT NULL,
    rule               text NOT NULL,
    occurrence         text NOT NULL,
    -- The replay alert it fed (replay_alerts.seq); NULL for a finding that fed none.
    alert_seq          integer,
    severity           text NOT NULL CHECK (severity IN ('yellow', 'red')),
    measured_at        timestamptz NOT NULL,
    evaluated_at       timestamptz NOT NULL,
    is_current         boolean NOT NULL,
    data_age_s         double precision,
    delay_cause        text,
    threshold_id       bigint,
    threshold_version  integer,
    held               boolean NOT NULL,
    clears             boolean NOT NULL,
    summary            text NOT NULL,
    explanation        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, citizen_id, rule, occurrence)
);

-- The alerts the lifecycle made of them, as they stood at the end of the period (times on the
-- measured-time clock).
CREATE TABLE replay_alerts (
    run_id             bigint NOT NULL REFERENCES replay_runs (id) ON DELETE CASCADE,
    seq                integer NOT NULL,
    citizen_id         uuid NOT NULL,
    rule               text NOT NULL,
    severity           text NOT NULL CHECK (severity IN ('yellow', 'red')),
    state              text NOT NULL,
    count              integer NOT NULL,
    first_measured_at  timestamptz NOT NULL,
    last_measured_at   timestamptz NOT NULL,
    opened_at          timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    is_current         boolean NOT NULL,
    held               boolean NOT NULL,
    threshold_id       bigint,
    threshold_version  integer,
    escalation_step    integer NOT NULL DEFAULT 0,
    resolved_at        timestamptz,
    outcome            text,
    summary            text NOT NULL,
    explanation        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX replay_alerts_citizen ON replay_alerts (run_id, citizen_id, rule);
