-- Personal baselines (anomaly/baseline.py, alerts/baselines.py): per citizen and series (a metric,
-- or a derived series such as spo2_pulse or first_motion) what the detector learnt from her own
-- history at the last retraining by `telecare alerts`. `state` is the frozen detector as JSON
-- (numbers and lists; never a pickle), NULL while the series is still in its learning period.
-- Derived data: a retraining rewrites the row, an erasure deletes it.
CREATE TABLE anomaly_baselines (
    citizen_id       uuid NOT NULL REFERENCES citizens (id),
    series           text NOT NULL,
    trained_at       timestamptz NOT NULL,
    rows             integer NOT NULL CHECK (rows >= 0),
    excluded         integer NOT NULL CHECK (excluded >= 0),
    first_at         timestamptz,
    trained_through  timestamptz,
    learning_until   timestamptz,
    state            jsonb,
    -- what a derived series is computed with (spo2_pulse: its components' usual value and spread)
    parameters       jsonb,
    PRIMARY KEY (citizen_id, series)
);
-- The retraining job takes the citizens whose baselines are oldest first.
CREATE INDEX anomaly_baselines_trained ON anomaly_baselines (trained_at);
