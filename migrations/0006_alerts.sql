-- Alerts: care teams, monitoring plans, versioned thresholds, pauses; the evaluation queue
-- that ingest fills in the transaction that stores a reading (the hook the alert engine
-- follows); alerts with their findings and history; delivery outboxes (webhooks, screens).
-- See docs/alerts.md for why evaluation runs off a queue and how the lifecycle works.

CREATE TABLE care_teams (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE citizens ADD COLUMN care_team_id uuid REFERENCES care_teams (id);
CREATE INDEX citizens_care_team ON citizens (care_team_id);

-- Which plan templates (alerts/plans.py) a citizen follows, and since when: replay uses the
-- plans in force at each measured time. `settings` overrides a template's schedule.
CREATE TABLE citizen_plans (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    citizen_id  uuid NOT NULL REFERENCES citizens (id),
    plan        text NOT NULL,
    valid       tstzrange NOT NULL CHECK (NOT isempty(valid) AND NOT lower_inf(valid)),
    settings    jsonb NOT NULL DEFAULT '{}',
    set_by      text NOT NULL,
    set_at      timestamptz NOT NULL,
    EXCLUDE USING gist (citizen_id WITH =, plan WITH =, valid WITH &&)
);

-- Per-citizen thresholds, one row per version: a change adds a row, nothing is updated.
-- The row id is what an alert records as the threshold that raised it; a metric without a
-- row uses its plan's default bands (recorded as version 0). A NULL band is absent (SpO2
-- has no upper bands).
CREATE TABLE thresholds (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    citizen_id    uuid NOT NULL REFERENCES citizens (id),
    metric        text NOT NULL,
    version       integer NOT NULL CHECK (version >= 1),
    alert_low     double precision,
    warning_low   double precision,
    warning_high  double precision,
    alert_high    double precision,
    valid_from    timestamptz NOT NULL,
    set_by        text NOT NULL,
    set_at        timestamptz NOT NULL,
    reason        text,
    UNIQUE (citizen_id, metric, version),
    CHECK (alert_low IS NULL OR warning_low IS NULL OR alert_low < warning_low),
    CHECK (warning_low IS NULL OR warning_high IS NULL OR warning_low < warning_high),
    CHECK (warning_high IS NULL OR alert_high IS NULL OR warning_high < alert_high),
    CHECK (alert_low IS NULL OR alert_high IS NULL OR alert_low < alert_high)
);
CREATE INDEX thresholds_in_force ON thresholds (citizen_id, metric, valid_from DESC);

-- Hospital admission, holiday: alerts are held and missed measurements not counted.
CREATE TABLE alert_pauses (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    citizen_id    uuid NOT NULL REFERENCES citizens (id),
    during        tstzrange NOT NULL CHECK (NOT isempty(during) AND NOT lower_inf(during)),
    reason        text NOT NULL CHECK (reason IN ('hospital_admission', 'holiday', 'other')),
    note          text,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    cancelled_at  timestamptz
);
CREATE INDEX alert_pauses_citizen ON alert_pauses USING gist (citizen_id, during);

-- The hook: every reading and event that an ingest transaction really stored (not a
-- redelivery) gets a row here in the same transaction, with what the rules need of it.
-- The alert engine deletes the rows it evaluated in the transaction that writes their
-- alerts, so each stored item is evaluated exactly once whatever process dies when.
CREATE TABLE evaluation_queue (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source         text NOT NULL CHECK (source IN ('reading', 'event')),
    citizen_id     uuid NOT NULL,
    device_id      text NOT NULL,
    -- The metric of a reading, the kind of an event.
    name           text NOT NULL,
    measured_at    timestamptz NOT NULL,
    seq            bigint NOT NULL,
    value          double precision,
    data           jsonb,
    quality        text,
    received_at    timestamptz NOT NULL,
    late           boolean NOT NULL,
    delay_cause    text,
    clock_suspect  boolean NOT NULL
);

-- Wakes the alert engine at commit (one notification per transaction, whatever its size).
CREATE FUNCTION telecare_notify_evaluation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('telecare_evaluation', '');
    RETURN NULL;
END $$;
CREATE TRIGGER evaluation_queue_notify AFTER INSERT ON evaluation_queue
    FOR EACH STATEMENT EXECUTE FUNCTION telecare_notify_evaluation();

-- One open alert per citizen and rule: repeats raise `count`, a worsening raises `severity`.
CREATE TABLE alerts (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    citizen_id         uuid NOT NULL REFERENCES citizens (id),
    care_team_id       uuid REFERENCES care_teams (id),
    rule               text NOT NULL,
    severity           text NOT NULL CHECK (severity IN ('yellow', 'red')),
    state              text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    count              integer NOT NULL DEFAULT 1 CHECK (count >= 1),
    -- Measured times of the first and latest finding; opened_at/updated_at on the engine's clock.
    first_measured_at  timestamptz NOT NULL,
    last_measured_at   timestamptz NOT NULL,
    opened_at          timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    -- False when the alert rests only on old data: shown as such, never escalated or pushed.
    is_current         boolean NOT NULL,
    data_age_s         double precision,
    delay_cause        text,
    -- Device, missed-measurement and silence alerts resolve themselves when the condition clears.
    self_resolving     boolean NOT NULL DEFAULT false,
    held               boolean NOT NULL DEFAULT false,
    summary            text NOT NULL,
    explanation        jsonb NOT NULL DEFAULT '{}',
    threshold_id       bigint REFERENCES thresholds (id),
    threshold_version  integer,
    escalation_step    integer NOT NULL DEFAULT 0,
    escalate_at        timestamptz,
    acknowledged_at    timestamptz,
    acknowledged_by    text,
    resolved_at        timestamptz,
    resolved_by        text,
    outcome            text CHECK (outcome IN ('contacted_citizen', 'changed_treatment',
                                               'not_actionable', 'device_problem', 'other',
                                               'condition_cleared')),
    note               text,
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK (state = 'open' OR acknowledged_at IS NOT NULL OR state = 'resolved')
);
CREATE UNIQUE INDEX alerts_one_open_per_rule ON alerts (citizen_id, rule) WHERE state <> 'resolved';
CREATE INDEX alerts_team_queue ON alerts (care_team_id, state, severity, opened_at);
CREATE INDEX alerts_citizen ON alerts (citizen_id, opened_at DESC);
CREATE INDEX alerts_escalation_due ON alerts (escalate_at) WHERE state = 'open' AND escalate_at IS NOT NULL;

-- Every finding that fed an alert. Its identity (citizen, rule, occurrence: the reading,
-- event or time window it is about) makes recording a finding idempotent: a finding seen
-- twice counts once.
CREATE TABLE alert_findings (
    citizen_id    uuid NOT NULL,
    rule          text NOT NULL,
    occurrence    text NOT NULL,
    alert_id      bigint NOT NULL REFERENCES alerts (id),
    severity      text NOT NULL CHECK (severity IN ('yellow', 'red')),
    measured_at   timestamptz NOT NULL,
    evaluated_at  timestamptz NOT NULL,
    is_current    boolean NOT NULL,
    data_age_s    double precision,
    delay_cause   text,
    detail        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (citizen_id, rule, occurrence)
);
CREATE INDEX alert_findings_alert ON alert_findings (alert_id, measured_at);

-- Everything that happens to an alert. The id orders the care team's stream (the SSE event
-- id a reconnecting client sends back as Last-Event-ID).
CREATE TABLE alert_history (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id      bigint NOT NULL REFERENCES alerts (id),
    care_team_id  uuid,
    at            timestamptz NOT NULL,
    action        text NOT NULL CHECK (action IN ('opened', 'repeated', 'worsened', 'acknowledged',
                                                  'resolved', 'self_resolved', 'escalated',
                                                  'released')),
    actor         text NOT NULL,
    severity      text NOT NULL,
    state         text NOT NULL,
    -- Whether this change is pushed to people (streams, webhooks) as needing attention now.
    pushed        boolean NOT NULL,
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, id);
CREATE INDEX alert_history_team ON alert_history (care_team_id, id);

CREATE FUNCTION telecare_notify_alert_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('telecare_alert_changes', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER alert_history_notify AFTER INSERT ON alert_history
    FOR EACH ROW EXECUTE FUNCTION telecare_notify_alert_change();

-- Who a red alert goes to when nobody acknowledges it: steps of {after_s, contact}, where a
-- contact is a role on the team, a webhook, or the team's stream. No row: the default chain.
CREATE TABLE escalation_policies (
    care_team_id  uuid PRIMARY KEY REFERENCES care_teams (id),
    steps         jsonb NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- Webhooks per team; deliveries are an outbox written in the transaction of the change.
CREATE TABLE webhooks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    care_team_id  uuid NOT NULL REFERENCES care_teams (id),
    url           text NOT NULL,
    secret        text NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id       bigint NOT NULL REFERENCES webhooks (id),
    history_id       bigint NOT NULL REFERENCES alert_history (id),
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    UNIQUE (webhook_id, history_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE TABLE webhook_attempts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id    bigint NOT NULL REFERENCES webhook_deliveries (id),
    attempted_at   timestamptz NOT NULL,
    status_code    integer,
    error          text,
    duration_ms    double precision NOT NULL
);

-- Messages to a citizen's home screen (its commands topic): "your nurse has seen your
-- measurement", reminders of a missed measurement. Written with the change that causes them.
CREATE TABLE screen_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    citizen_id  uuid NOT NULL REFERENCES citizens (id),
    kind        text NOT NULL CHECK (kind IN ('seen', 'reminder', 'message')),
    alert_id    bigint REFERENCES alerts (id),
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    sent_at     timestamptz,
    -- Set when the citizen has no home screen to send it to.
    undeliverable  text
);
CREATE INDEX screen_messages_unsent ON screen_messages (id) WHERE sent_at IS NULL AND undeliverable IS NULL;
