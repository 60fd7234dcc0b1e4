-- Queue items the alert engine could not evaluate: building their citizen's context or storing
-- the alert changes they raised failed on a defect (a rule that raises is caught by the rule
-- guard and becomes a rule_failed alert instead; alerts/rules/guard.py). The engine moves such
-- a citizen's items here, in the transaction that raises an `evaluation_failed` alert for her,
-- so that the items of every other citizen go on being evaluated; `telecare alerts requeue`
-- puts them back once the defect is fixed. The columns are evaluation_queue's, in its order.
CREATE TABLE evaluation_failures (
    id             bigint PRIMARY KEY,  -- the queue row's id
    source         text NOT NULL CHECK (source IN ('reading', 'event')),
    citizen_id     uuid NOT NULL,
    device_id      text NOT NULL,
    name           text NOT NULL,
    measured_at    timestamptz NOT NULL,
    seq            bigint NOT NULL,
    value          double precision,
    data           jsonb,
    quality        text,
    received_at    timestamptz NOT NULL,
    late           boolean NOT NULL,
    delay_cause    text,
    clock_suspect  boolean NOT NULL,
    failed_at      timestamptz NOT NULL,
    -- the exception's type and where it was raised (never its message: it may quote a value)
    error          text NOT NULL
);
CREATE INDEX evaluation_failures_citizen ON evaluation_failures (citizen_id, id);
