"""SQL of alerts and what they are made of: alerts, their findings and history, thresholds,
plans, pauses, care teams, escalation policies, webhooks and the delivery outboxes written with
a change. Functions take a connection and never commit; the service owns the order."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from alerts.lifecycle import AlertState, AlertStatus, HistoryEntry
from alerts.models import Bands, Finding, Severity, Threshold
from core import locks

Conn = psycopg.Connection[Any]
Query = str | sql.Composed


ALERT_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in (
    "id", "citizen_id", "care_team_id", "rule", "severity", "state", "count", "first_measured_at",
    "last_measured_at", "opened_at", "updated_at", "is_current", "data_age_s", "delay_cause",
    "self_resolving", "held", "summary", "explanation", "threshold_id", "threshold_version",
    "escalation_step", "escalate_at", "acknowledged_at", "acknowledged_by", "resolved_at",
    "resolved_by", "outcome", "note"))

LOCK_CITIZEN_ALERTS = "SELECT pg_advisory_xact_lock(%s, hashtext(%s::text))"
ACTIVE_ALERTS = sql.SQL("""
SELECT {alert_columns} FROM alerts
 WHERE citizen_id = %s AND rule = ANY(%s) AND state <> 'resolved'
   FOR UPDATE""").format(alert_columns=ALERT_COLUMNS)
ALERT = sql.SQL("SELECT {alert_columns} FROM alerts WHERE id = %s").format(alert_columns=ALERT_COLUMNS)
ALERT_FOR_UPDATE = sql.SQL("SELECT {alert_columns} FROM alerts WHERE id = %s FOR UPDATE").format(
    alert_columns=ALERT_COLUMNS)
RECORDED_OCCURRENCES = """
SELECT f.rule, f.occurrence
  FROM alert_findings f
  JOIN unnest(%s::text[], %s::text[]) AS k(rule, occurrence) USING (rule, occurrence)
 WHERE f.citizen_id = %s"""
INSERT_ALERT = """
INSERT INTO alerts (citizen_id, care_team_id, rule, severity, state, count, first_measured_at,
                    last_measured_at, opened_at, updated_at, is_current, data_age_s, delay_cause,
                    self_resolving, held, summary, explanation, threshold_id, threshold_version,
                    escalation_step, escalate_at, acknowledged_at, acknowledged_by, resolved_at,
                    resolved_by, outcome, note)
VALUES (%(citizen_id)s, %(care_team_id)s, %(rule)s, %(severity)s, %(state)s, %(count)s,
        %(first_measured_at)s, %(last_measured_at)s, %(opened_at)s, %(updated_at)s,
        %(is_current)s, %(data_age_s)s, %(delay_cause)s, %(self_resolving)s, %(held)s,
        %(summary)s, %(explanation)s, %(threshold_id)s, %(threshold_version)s,
        %(escalation_step)s, %(escalate_at)s, %(acknowledged_at)s, %(acknowledged_by)s,
        %(resolved_at)s, %(resolved_by)s, %(outcome)s, %(note)s)
RETURNING id"""
UPDATE_ALERT = """
UPDATE alerts SET care_team_id = %(care_team_id)s, severity = %(severity)s, state = %(state)s,
       count = %(count)s, first_measured_at = %(first_measured_at)s,
       last_measured_at = %(last_measured_at)s, updated_at = %(updated_at)s,
       is_current = %(is_current)s, data_age_s = %(data_age_s)s, delay_cause = %(delay_cause)s,
       self_resolving = %(self_resolving)s, held = %(held)s, summary = %(summary)s,
       explanation = %(explanation)s, threshold_id = %(threshold_id)s,
       threshold_version = %(threshold_version)s, escalation_step = %(escalation_step)s,
       escalate_at = %(escalate_at)s, acknowledged_at = %(acknowledged_at)s,
       acknowledged_by = %(acknowledged_by)s, resolved_at = %(resolved_at)s,
       resolved_by = %(resolved_by)s, outcome = %(outcome)s, note = %(note)s
 WHERE id = %(id)s"""
INSERT_FINDING = """
INSERT INTO alert_findings (citizen_id, rule, occurrence, alert_id, severity, measured_at,
                            evaluated_at, is_current, data_age_s, delay_cause, detail)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
RETURNING alert_id"""
INSERT_HISTORY = """
INSERT INTO alert_history (alert_id, care_team_id, at, action, actor, severity, state, pushed, detail)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING id"""
ENQUEUE_TEAM_WEBHOOKS = """
INSERT INTO webhook_deliveries (webhook_id, history_id, next_attempt_at, created_at)
SELECT id, %(history_id)s, %(now)s, %(now)s FROM webhooks
 WHERE care_team_id = %(team_id)s AND active
ON CONFLICT DO NOTHING"""
ENQUEUE_WEBHOOK = """
INSERT INTO webhook_deliveries (webhook_id, history_id, next_attempt_at, created_at)
SELECT id, %(history_id)s, %(now)s, %(now)s FROM webhooks WHERE id = %(webhook_id)s AND active
ON CONFLICT DO NOTHING"""
INSERT_SCREEN_MESSAGE = """
INSERT INTO screen_messages (citizen_id, kind, alert_id, body, created_at)
VALUES (%s, %s, %s, %s, %s) RETURNING id"""
INSERT_REMINDER = """
INSERT INTO screen_messages (citizen_id, kind, body, created_at, occurrence)
VALUES (%s, 'reminder', %s, %s, %s)
ON CONFLICT (citizen_id, occurrence) WHERE occurrence IS NOT NULL DO NOTHING"""
RESTS_ON_READING = """
SELECT EXISTS (SELECT 1 FROM alert_findings WHERE alert_id = %s AND occurrence LIKE 'r:%%')"""
DUE_ESCALATIONS = sql.SQL("""
SELECT {alert_columns} FROM alerts
 WHERE state = 'open' AND escalate_at IS NOT NULL AND escalate_at <= %s
 ORDER BY escalate_at
 LIMIT %s
   FOR UPDATE SKIP LOCKED""").format(alert_columns=ALERT_COLUMNS)
# A pause is in force from its start until its end or its cancellation, whichever is first.
PAUSE_END = sql.SQL("least(upper(p.during), p.cancelled_at)")
RELEASABLE = sql.SQL("""
SELECT {alert_columns} FROM alerts a
 WHERE a.held AND a.state <> 'resolved'
   AND (%(citizens)s::uuid[] IS NULL OR a.citizen_id = ANY(%(citizens)s))
   AND NOT EXISTS (SELECT 1 FROM alert_pauses p
                    WHERE p.citizen_id = a.citizen_id AND lower(p.during) <= %(now)s
                      AND ({pause_end} IS NULL OR {pause_end} > %(now)s))
 ORDER BY a.id
   FOR UPDATE OF a SKIP LOCKED""").format(alert_columns=ALERT_COLUMNS, pause_end=PAUSE_END)
HISTORY = """
SELECT id, stream_position, alert_id, care_team_id, at, action, actor, severity, state, pushed,
       detail
  FROM alert_history WHERE alert_id = %s ORDER BY stream_position"""
FINDINGS = """
SELECT citizen_id, rule, occurrence, alert_id, severity, measured_at, evaluated_at, is_current,
       data_age_s, delay_cause, detail
  FROM alert_findings WHERE alert_id = %s ORDER BY measured_at, occurrence"""

POLICIES = "SELECT care_team_id, steps FROM escalation_policies WHERE care_team_id = ANY(%s)"
UPSERT_POLICY = """
INSERT INTO escalation_policies (care_team_id, steps, updated_at) VALUES (%s, %s, %s)
ON CONFLICT (care_team_id) DO UPDATE SET steps = excluded.steps, updated_at = excluded.updated_at"""

# FOR NO KEY UPDATE: serialises threshold versions of a citizen without blocking the foreign
# key checks of ingest's inserts (which take KEY SHARE).
LOCK_CITIZEN = "SELECT 1 FROM citizens WHERE id = %s FOR NO KEY UPDATE"
NEXT_THRESHOLD_VERSION = """
SELECT coalesce(max(version), 0) + 1 FROM thresholds WHERE citizen_id = %s AND metric = %s"""
THRESHOLD_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in (
    "id", "citizen_id", "metric", "version", "alert_low", "warning_low", "warning_high",
    "alert_high", "valid_from", "set_by", "set_at", "reason"))
INSERT_THRESHOLD = sql.SQL("""
INSERT INTO thresholds (citizen_id, metric, version, alert_low, warning_low, warning_high,
                        alert_high, valid_from, set_by, set_at, reason)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING {threshold_columns}""").format(threshold_columns=THRESHOLD_COLUMNS)
# The version in force: the latest valid_from not after `at` (the highest version among equals).
THRESHOLDS_IN_FORCE = sql.SQL("""
SELECT DISTINCT ON (citizen_id, metric) {threshold_columns}
  FROM thresholds
 WHERE citizen_id = ANY(%s) AND valid_from <= %s
 ORDER BY citizen_id, metric, valid_from DESC, version DESC""").format(threshold_columns=THRESHOLD_COLUMNS)
THRESHOLD_HISTORY = sql.SQL("""
SELECT {threshold_columns} FROM thresholds
 WHERE citizen_id = %s AND (%s::text IS NULL OR metric = %s)
 ORDER BY metric, version""").format(threshold_columns=THRESHOLD_COLUMNS)

PLAN_COLUMNS = sql.SQL("""
id, citizen_id, plan, lower(valid) AS valid_from, upper(valid) AS valid_to, settings, set_by, set_at""")
INSERT_PLAN = sql.SQL("""
INSERT INTO citizen_plans (citizen_id, plan, valid, settings, set_by, set_at)
VALUES (%s, %s, tstzrange(%s, %s, '[)'), %s, %s, %s)
RETURNING {plan_columns}""").format(plan_columns=PLAN_COLUMNS)
END_PLAN = sql.SQL("""
UPDATE citizen_plans SET valid = tstzrange(lower(valid), %(at)s, '[)')
 WHERE citizen_id = %(citizen_id)s AND plan = %(plan)s AND lower(valid) < %(at)s
   AND (upper_inf(valid) OR upper(valid) > %(at)s)
RETURNING {plan_columns}""").format(plan_columns=PLAN_COLUMNS)
PLANS_IN_FORCE = sql.SQL("""
SELECT {plan_columns} FROM citizen_plans
 WHERE citizen_id = ANY(%s) AND valid @> %s::timestamptz
 ORDER BY citizen_id, plan""").format(plan_columns=PLAN_COLUMNS)
PLANS_OF = sql.SQL("""
SELECT {plan_columns} FROM citizen_plans WHERE citizen_id = %s ORDER BY lower(valid), plan""").format(
    plan_columns=PLAN_COLUMNS)

PAUSE_COLUMNS = sql.SQL("""
p.id, p.citizen_id, lower(p.during) AS start, upper(p.during) AS "end", {end} AS in_force_until,
p.reason, p.note, p.created_by, p.created_at, p.cancelled_at""").format(end=PAUSE_END)
INSERT_PAUSE = """
INSERT INTO alert_pauses (citizen_id, during, reason, note, created_by, created_at)
VALUES (%s, tstzrange(%s, %s, '[)'), %s, %s, %s, %s) RETURNING id"""
CANCEL_PAUSE = """
UPDATE alert_pauses SET cancelled_at = %s WHERE id = %s AND cancelled_at IS NULL"""
PAUSE = sql.SQL("SELECT {pause_columns} FROM alert_pauses p WHERE p.id = %s").format(
    pause_columns=PAUSE_COLUMNS)
# Pauses in force at some time in [start, end): a pause cancelled before it began never was.
PAUSES_FOR = sql.SQL("""
SELECT {pause_columns} FROM alert_pauses p
 WHERE p.citizen_id = ANY(%(citizens)s) AND lower(p.during) < %(end)s
   AND ({pause_end} IS NULL OR {pause_end} > %(start)s)
   AND (p.cancelled_at IS NULL OR p.cancelled_at > lower(p.during))
 ORDER BY p.citizen_id, lower(p.during), p.id""").format(pause_columns=PAUSE_COLUMNS, pause_end=PAUSE_END)

INSERT_TEAM = "INSERT INTO care_teams (name, created_at) VALUES (%s, %s) RETURNING id, name, created_at"
TEAM = "SELECT id, name, created_at FROM care_teams WHERE id = %s"
TEAMS = "SELECT id, name, created_at FROM care_teams ORDER BY name"
TEAMS_WITHIN = """
SELECT id, name, created_at FROM care_teams WHERE id IN (SELECT v.id FROM ({within}) v)
 ORDER BY name"""
ASSIGN_CITIZEN = "UPDATE citizens SET care_team_id = %s WHERE id = %s RETURNING id"
# The new team takes over the citizen's alerts that are still in hand.
MOVE_ACTIVE_ALERTS = """
UPDATE alerts SET care_team_id = %s WHERE citizen_id = %s AND state <> 'resolved'"""
TEAMS_OF = "SELECT id, care_team_id FROM citizens WHERE id = ANY(%s)"

WEBHOOK_COLUMNS = sql.SQL("id, care_team_id, url, secret, active, created_at")
INSERT_WEBHOOK = sql.SQL("""
INSERT INTO webhooks (care_team_id, url, secret, created_at) VALUES (%s, %s, %s, %s)
RETURNING {webhook_columns}""").format(webhook_columns=WEBHOOK_COLUMNS)
SET_WEBHOOK_ACTIVE = sql.SQL("""
UPDATE webhooks SET active = %(active)s
 WHERE id = %(id)s AND care_team_id = coalesce(%(team_id)s::uuid, care_team_id)
RETURNING {webhook_columns}""").format(webhook_columns=WEBHOOK_COLUMNS)
WEBHOOKS_OF_TEAM = sql.SQL(
    "SELECT {webhook_columns} FROM webhooks WHERE care_team_id = %s ORDER BY id").format(
    webhook_columns=WEBHOOK_COLUMNS)


@dataclass(frozen=True)
class HistoryRow:
    """One stored alert_history row."""

    id: int
    stream_position: int | None  # the event id on the team's stream (drawn at commit)
    alert_id: int
    care_team_id: UUID | None
    at: datetime
    action: str
    actor: str
    severity: str
    state: str
    pushed: bool
    detail: dict[str, Any]


@dataclass(frozen=True)
class FindingRow:
    """One stored alert_findings row."""

    citizen_id: UUID
    rule: str
    occurrence: str
    alert_id: int
    severity: str
    measured_at: datetime
    evaluated_at: datetime
    is_current: bool
    data_age_s: float | None
    delay_cause: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class ThresholdVersion:
    """One version of a citizen's bands for one metric, with who set it and why."""

    id: int
    citizen_id: UUID
    metric: str
    version: int
    bands: Bands
    valid_from: datetime
    set_by: str
    set_at: datetime
    reason: str | None

    @property
    def threshold(self) -> Threshold:
        return Threshold(metric=self.metric, bands=self.bands, version=self.version, id=self.id,
                         valid_from=self.valid_from)


@dataclass(frozen=True)
class PlanAssignment:
    """A plan template a citizen follows during [valid_from, valid_to)."""

    id: int
    citizen_id: UUID
    plan: str
    valid_from: datetime
    valid_to: datetime | None
    settings: dict[str, Any]
    set_by: str
    set_at: datetime


@dataclass(frozen=True)
class Pause:
    """A pause of a citizen's alerts; `in_force_until` is its end or cancellation (None: open)."""

    id: int
    citizen_id: UUID
    start: datetime
    end: datetime | None
    in_force_until: datetime | None
    reason: str
    note: str | None
    created_by: str
    created_at: datetime
    cancelled_at: datetime | None

    @property
    def span(self) -> tuple[datetime, datetime | None]:
        """(start, end or None) as CitizenContext.pauses holds it."""
        return self.start, self.in_force_until


@dataclass(frozen=True)
class CareTeam:
    id: UUID
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Webhook:
    id: int
    care_team_id: UUID
    url: str
    active: bool
    created_at: datetime
    secret: str = field(repr=False, default="")


def _default(value: object) -> Any:
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_dumps = partial(json.dumps, default=_default)


def _json(value: Any) -> Jsonb:
    """JSON for a jsonb column; rules' explanations may hold times and ids."""
    return Jsonb(value, dumps=_dumps)


def _scalar(conn: Conn, query: Query, params: Sequence[Any] | dict[str, Any]) -> Any:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(query, params).fetchone()
    return None if row is None else row[0]


def _rows(conn: Conn, query: Query, params: Sequence[Any] | dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _one(conn: Conn, query: Query, params: Sequence[Any] | dict[str, Any]) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def _alert(row: dict[str, Any]) -> AlertState:
    return AlertState(**{**row, "severity": Severity(row["severity"]),
                         "state": AlertStatus(row["state"])})


def _alert_params(state: AlertState) -> dict[str, Any]:
    params = {name: getattr(state, name) for name in AlertState.__dataclass_fields__}
    params.update(severity=state.severity.value, state=state.state.value,
                  explanation=_json(state.explanation))
    return params


# --- alerts, findings, history, outboxes ---------------------------------------------------

def lock_citizen_alerts(conn: Conn, citizen_id: UUID) -> None:
    """Hold the citizen's alert decisions until this transaction ends."""
    conn.execute(LOCK_CITIZEN_ALERTS, (locks.CITIZEN_ALERTS_CLASS, str(citizen_id)))


def active_alerts(conn: Conn, citizen_id: UUID, rules: Sequence[str]) -> dict[str, AlertState]:
    """The citizen's alerts of `rules` that are not resolved, locked for update, by rule."""
    return {row["rule"]: _alert(row) for row in _rows(conn, ACTIVE_ALERTS, (citizen_id, list(rules)))}


def alert(conn: Conn, alert_id: int) -> AlertState | None:
    row = _one(conn, ALERT, (alert_id,))
    return None if row is None else _alert(row)


def alert_for_update(conn: Conn, alert_id: int) -> AlertState | None:
    row = _one(conn, ALERT_FOR_UPDATE, (alert_id,))
    return None if row is None else _alert(row)


def recorded_occurrences(conn: Conn, citizen_id: UUID,
                         keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (rule, occurrence) of `keys` the citizen's findings already hold."""
    rules = [rule for rule, _ in keys]
    occurrences = [occurrence for _, occurrence in keys]
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(RECORDED_OCCURRENCES, (rules, occurrences, citizen_id)).fetchall()
    return {(rule, occurrence) for rule, occurrence in rows}


def insert_alert(conn: Conn, state: AlertState) -> int:
    alert_id: int = _scalar(conn, INSERT_ALERT, _alert_params(state))
    return alert_id


def update_alert(conn: Conn, state: AlertState) -> None:
    conn.execute(UPDATE_ALERT, _alert_params(state))


def insert_finding(conn: Conn, citizen_id: UUID, alert_id: int, finding: Finding,
                   evaluated_at: datetime) -> bool:
    """Record the finding as feeding the alert; False when it was recorded before."""
    detail = {"summary": finding.summary, "explanation": finding.explanation,
              "threshold_id": finding.threshold_id, "threshold_version": finding.threshold_version,
              "clears": finding.clears, "held": finding.held}
    stored = _scalar(conn, INSERT_FINDING, (
        citizen_id, finding.rule, finding.occurrence, alert_id, finding.severity.value,
        finding.measured_at, evaluated_at, finding.is_current, finding.data_age_s,
        finding.delay_cause, _json(detail)))
    return stored is not None


def insert_history(conn: Conn, alert_id: int, care_team_id: UUID | None, entry: HistoryEntry) -> int:
    history_id: int = _scalar(conn, INSERT_HISTORY, (
        alert_id, care_team_id, entry.at, entry.action.value, entry.actor, entry.severity.value,
        entry.state.value, entry.pushed, _json(entry.detail)))
    return history_id


def enqueue_team_webhooks(conn: Conn, history_id: int, team_id: UUID, now: datetime) -> int:
    """A delivery of the history row to each active webhook of the team; how many."""
    cur = conn.execute(ENQUEUE_TEAM_WEBHOOKS, {"history_id": history_id, "team_id": team_id,
                                               "now": now})
    return cur.rowcount


def enqueue_webhook(conn: Conn, history_id: int, webhook_id: int, now: datetime) -> int:
    """A delivery of the history row to one webhook, if it is active (and not queued yet)."""
    cur = conn.execute(ENQUEUE_WEBHOOK, {"history_id": history_id, "webhook_id": webhook_id,
                                         "now": now})
    return cur.rowcount


def insert_screen_message(conn: Conn, citizen_id: UUID, kind: str, alert_id: int | None,
                          body: dict[str, Any], now: datetime) -> int:
    message_id: int = _scalar(conn, INSERT_SCREEN_MESSAGE, (citizen_id, kind, alert_id,
                                                            _json(body), now))
    return message_id


def insert_reminder(conn: Conn, citizen_id: UUID, occurrence: str, body: dict[str, Any],
                    now: datetime) -> bool:
    """Queue a reminder for the citizen's screen unless one of this occurrence is queued."""
    return conn.execute(INSERT_REMINDER, (citizen_id, _json(body), now, occurrence)).rowcount == 1


def rests_on_reading(conn: Conn, alert_id: int) -> bool:
    """Whether a finding about a reading fed the alert (the citizen measured something)."""
    return bool(_scalar(conn, RESTS_ON_READING, (alert_id,)))


def due_escalations(conn: Conn, now: datetime, limit: int) -> list[AlertState]:
    """Open alerts whose next escalation step is due, locked; others' locked rows skipped."""
    return [_alert(row) for row in _rows(conn, DUE_ESCALATIONS, (now, limit))]


def releasable(conn: Conn, citizen_ids: Sequence[UUID] | None, now: datetime) -> list[AlertState]:
    """Held alerts whose citizen has no pause in force at `now`, locked."""
    citizens = None if citizen_ids is None else list(citizen_ids)
    return [_alert(row) for row in _rows(conn, RELEASABLE, {"citizens": citizens, "now": now})]


def history(conn: Conn, alert_id: int) -> list[HistoryRow]:
    return [HistoryRow(**row) for row in _rows(conn, HISTORY, (alert_id,))]


def findings(conn: Conn, alert_id: int) -> list[FindingRow]:
    return [FindingRow(**row) for row in _rows(conn, FINDINGS, (alert_id,))]


# --- escalation policies -------------------------------------------------------------------

def policy_steps(conn: Conn, team_ids: Iterable[UUID]) -> dict[UUID, Any]:
    """The stored steps (JSON) of the teams that have a policy of their own."""
    return {row["care_team_id"]: row["steps"] for row in _rows(conn, POLICIES, (list(team_ids),))}


def upsert_policy(conn: Conn, team_id: UUID, steps: list[dict[str, Any]], now: datetime) -> None:
    conn.execute(UPSERT_POLICY, (team_id, _json(steps), now))


# --- thresholds ----------------------------------------------------------------------------

def lock_citizen(conn: Conn, citizen_id: UUID) -> bool:
    """Serialise changes to the citizen's settings; False when there is no such citizen."""
    return _scalar(conn, LOCK_CITIZEN, (citizen_id,)) is not None


def next_threshold_version(conn: Conn, citizen_id: UUID, metric: str) -> int:
    version: int = _scalar(conn, NEXT_THRESHOLD_VERSION, (citizen_id, metric))
    return version


def _threshold(row: dict[str, Any]) -> ThresholdVersion:
    bands = Bands(alert_low=row.pop("alert_low"), warning_low=row.pop("warning_low"),
                  warning_high=row.pop("warning_high"), alert_high=row.pop("alert_high"))
    return ThresholdVersion(bands=bands, **row)


def insert_threshold(conn: Conn, citizen_id: UUID, metric: str, version: int, bands: Bands,
                     valid_from: datetime, set_by: str, set_at: datetime,
                     reason: str | None) -> ThresholdVersion:
    row = _one(conn, INSERT_THRESHOLD, (citizen_id, metric, version, bands.alert_low,
                                        bands.warning_low, bands.warning_high, bands.alert_high,
                                        valid_from, set_by, set_at, reason))
    assert row is not None  # INSERT ... RETURNING returns the row
    return _threshold(row)


def thresholds_in_force(conn: Conn, citizen_ids: Sequence[UUID], at: datetime) -> list[ThresholdVersion]:
    return [_threshold(row) for row in _rows(conn, THRESHOLDS_IN_FORCE, (list(citizen_ids), at))]


def threshold_history(conn: Conn, citizen_id: UUID, metric: str | None) -> list[ThresholdVersion]:
    return [_threshold(row) for row in _rows(conn, THRESHOLD_HISTORY, (citizen_id, metric, metric))]


# --- plans ---------------------------------------------------------------------------------

def insert_plan(conn: Conn, citizen_id: UUID, plan: str, valid_from: datetime,
                valid_to: datetime | None, settings: dict[str, Any], set_by: str,
                set_at: datetime) -> PlanAssignment:
    row = _one(conn, INSERT_PLAN, (citizen_id, plan, valid_from, valid_to, _json(settings),
                                   set_by, set_at))
    assert row is not None
    return PlanAssignment(**row)


def end_plan(conn: Conn, citizen_id: UUID, plan: str, at: datetime) -> PlanAssignment | None:
    row = _one(conn, END_PLAN, {"citizen_id": citizen_id, "plan": plan, "at": at})
    return None if row is None else PlanAssignment(**row)


def plans_in_force(conn: Conn, citizen_ids: Sequence[UUID], at: datetime) -> list[PlanAssignment]:
    return [PlanAssignment(**row) for row in _rows(conn, PLANS_IN_FORCE, (list(citizen_ids), at))]


def plans_of(conn: Conn, citizen_id: UUID) -> list[PlanAssignment]:
    return [PlanAssignment(**row) for row in _rows(conn, PLANS_OF, (citizen_id,))]


# --- pauses --------------------------------------------------------------------------------

def insert_pause(conn: Conn, citizen_id: UUID, start: datetime, end: datetime | None, reason: str,
                 note: str | None, created_by: str, created_at: datetime) -> int:
    pause_id: int = _scalar(conn, INSERT_PAUSE, (citizen_id, start, end, reason, note, created_by,
                                                 created_at))
    return pause_id


def cancel_pause(conn: Conn, pause_id: int, at: datetime) -> None:
    conn.execute(CANCEL_PAUSE, (at, pause_id))


def pause(conn: Conn, pause_id: int) -> Pause | None:
    row = _one(conn, PAUSE, (pause_id,))
    return None if row is None else Pause(**row)


def pauses_for(conn: Conn, citizen_ids: Sequence[UUID], start: datetime, end: datetime) -> list[Pause]:
    return [Pause(**row) for row in _rows(conn, PAUSES_FOR, {"citizens": list(citizen_ids),
                                                             "start": start, "end": end})]


# --- care teams and webhooks ---------------------------------------------------------------

def insert_team(conn: Conn, name: str, now: datetime) -> CareTeam:
    row = _one(conn, INSERT_TEAM, (name, now))
    assert row is not None
    return CareTeam(**row)


def team(conn: Conn, team_id: UUID) -> CareTeam | None:
    row = _one(conn, TEAM, (team_id,))
    return None if row is None else CareTeam(**row)


def teams(conn: Conn, within: tuple[sql.Composable, dict[str, Any]] | None = None
          ) -> list[CareTeam]:
    """Every care team by name; with `within` (a subquery of team ids and its parameters),
    only those."""
    if within is None:
        return [CareTeam(**row) for row in _rows(conn, TEAMS, ())]
    query = sql.SQL(TEAMS_WITHIN).format(within=within[0])
    return [CareTeam(**row) for row in _rows(conn, query, within[1])]


def assign_citizen(conn: Conn, citizen_id: UUID, team_id: UUID | None) -> bool:
    """Put the citizen in the team (None: in none); False when there is no such citizen."""
    if _scalar(conn, ASSIGN_CITIZEN, (team_id, citizen_id)) is None:
        return False
    conn.execute(MOVE_ACTIVE_ALERTS, (team_id, citizen_id))
    return True


def teams_of(conn: Conn, citizen_ids: Sequence[UUID]) -> dict[UUID, UUID | None]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return dict(cur.execute(TEAMS_OF, (list(citizen_ids),)).fetchall())


def insert_webhook(conn: Conn, team_id: UUID, url: str, secret: str, now: datetime) -> Webhook:
    row = _one(conn, INSERT_WEBHOOK, (team_id, url, secret, now))
    assert row is not None
    return Webhook(**row)


def set_webhook_active(conn: Conn, webhook_id: int, active: bool,
                       team_id: UUID | None) -> Webhook | None:
    """The webhook switched on or off; None when there is none with that id (in that team)."""
    row = _one(conn, SET_WEBHOOK_ACTIVE, {"active": active, "id": webhook_id, "team_id": team_id})
    return None if row is None else Webhook(**row)


def webhooks_of_team(conn: Conn, team_id: UUID) -> list[Webhook]:
    return [Webhook(**row) for row in _rows(conn, WEBHOOKS_OF_TEAM, (team_id,))]
