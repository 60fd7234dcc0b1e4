-- Queue items the alert engine could not evaluate: building their citizen's context or storing
-- the alert changes they raised failed on a defect (a rule that raises is caught by the rule
-- guard and becomes a rule_failed alert instead; alerts/rules/guard.py). The engine moves such
-- a citizen's items here, in the transaction that raises an `evaluation_failed` alert for her,
-- so that the items of every other citizen go on being evaluated; `telecare alerts requeue`
-- puts them back once the defect is fixed. The columns are evaluation_queue's (LIKE: the
-- same names, types, NOT NULL and CHECK), then when and why the item failed.
CREATE TABLE evaluation_failures (
    LIKE evaluation_queue INCLUDING CONSTRAINTS,  -- id: the queue row's id (no identity)
    failed_at      timestamptz NOT NULL,
    -- the exception's type and where it was raised (never its message: it may quote a value)
    error          text NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX evaluation_failures_citizen ON evaluation_failures (citizen_id, id);
