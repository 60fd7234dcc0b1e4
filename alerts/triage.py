"""What a nurse reads when she triages: a care team's queue, one alert with what explains it
(its findings, the threshold version that raised it, the readings around it) and its history.
Read-side SQL only; changes to alerts go through alerts/service.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from devices.catalogue import SIGN_OF, parts_of

Conn = psycopg.Connection[Any]
Query = str | sql.Composed
# A subquery of citizen ids and its parameters (api/access.py `visible`).
Within = tuple[sql.Composable, dict[str, Any]]

# How far either side of an alert's findings its readings are shown.
READINGS_AROUND = timedelta(hours=24)
# The vitals NEWS2 scores, each a metric the catalogue stores.
NEWS2_METRICS = ("respiration_rate", "spo2", "systolic_bp", "pulse_rate", "body_temperature")
# Rules whose name does not end in the metric they are about.
_RULE_METRICS: dict[str, tuple[str, ...]] = {
    "trend:weight_gain": ("body_weight",),
    "news2": NEWS2_METRICS,
}

_ALERT_COLUMNS = """
       a.id, a.citizen_id, a.care_team_id, a.rule, a.severity, a.state, a.count,
       a.first_measured_at, a.last_measured_at, a.opened_at, a.updated_at, a.is_current,
       a.data_age_s, a.delay_cause, a.self_resolving, a.held, a.summary, a.explanation,
       a.threshold_id, a.threshold_version, a.escalation_step, a.escalate_at,
       a.acknowledged_at, a.acknowledged_by, a.resolved_at, a.resolved_by, a.outcome, a.note"""

# Red before yellow, then the oldest first; the id keeps pages stable among equal times.
TEAM_QUEUE = f"""
SELECT {_ALERT_COLUMNS}, count(*) OVER () AS total
  FROM alerts a
 WHERE a.care_team_id = %(team_id)s
   AND a.state = ANY(%(states)s)
   AND (%(severities)s::text[] IS NULL OR a.severity = ANY(%(severities)s))
   AND (%(rule)s::text IS NULL OR a.rule = %(rule)s)
   AND (%(citizen_id)s::uuid IS NULL OR a.citizen_id = %(citizen_id)s)
   AND {{within}}
 ORDER BY (a.severity = 'red') DESC, a.opened_at, a.id
 LIMIT %(limit)s OFFSET %(offset)s"""  # noqa: S608 - the columns are a constant
TEAM_QUEUE_TOTAL = """
SELECT count(*)
  FROM alerts a
 WHERE a.care_team_id = %(team_id)s
   AND a.state = ANY(%(states)s)
   AND (%(severities)s::text[] IS NULL OR a.severity = ANY(%(severities)s))
   AND (%(rule)s::text IS NULL OR a.rule = %(rule)s)
   AND (%(citizen_id)s::uuid IS NULL OR a.citizen_id = %(citizen_id)s)
   AND {within}"""
ALERT = f"SELECT {_ALERT_COLUMNS} FROM alerts a WHERE a.id = %(alert_id)s"  # noqa: S608
ALERT_EXISTS = "SELECT 1 FROM alerts WHERE id = %(alert_id)s"
FINDINGS = """
SELECT occurrence, severity, measured_at, evaluated_at, is_current, data_age_s, delay_cause,
       detail
  FROM alert_findings
 WHERE alert_id = %(alert_id)s
 ORDER BY measured_at, occurrence
 LIMIT %(limit)s"""
THRESHOLD = """
SELECT id, metric, version, alert_low, warning_low, warning_high, alert_high, valid_from,
       set_by, set_at, reason
  FROM thresholds
 WHERE id = %(threshold_id)s"""
READINGS_AROUND_SQL = """
SELECT metric, measured_at, value, device_id, seq, received_at, late, delay_cause, quality,
       clock_suspect
  FROM readings
 WHERE citizen_id = %(citizen_id)s AND metric = ANY(%(metrics)s)
   AND measured_at >= %(start)s AND measured_at < %(end)s
 ORDER BY metric, measured_at, seq
 LIMIT %(limit)s"""

@dataclass(frozen=True)
class QueueFilter:
    """Which of a team's alerts the queue shows; None means any."""

    states: tuple[str, ...] = ("open", "acknowledged")
    severities: tuple[str, ...] | None = None
    rule: str | None = None
    citizen_id: UUID | None = None


def _scalar(conn: Conn, query: Query, params: dict[str, Any]) -> Any:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(query, params).fetchone()
    return None if row is None else row[0]


def _rows(conn: Conn, query: Query, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()




def alert_exists(conn: Conn, alert_id: int) -> bool:
    """Whether the alert exists."""
    return _scalar(conn, ALERT_EXISTS, {"alert_id": alert_id}) is not None


def team_queue(conn: Conn, team_id: UUID, where: QueueFilter, limit: int, offset: int,
               within: Within | None = None) -> tuple[list[dict[str, Any]], int]:
    """One page of a team's alerts, red before yellow then oldest first, and how many match;
    with `within` (a subquery of citizen_id and its parameters), only its citizens' alerts (a
    citizen who left the team takes their history out of its queue)."""
    params: dict[str, Any] = {
        "team_id": team_id, "states": list(where.states),
        "severities": None if where.severities is None else list(where.severities),
        "rule": where.rule, "citizen_id": where.citizen_id, "limit": limit, "offset": offset}
    condition: sql.Composable = sql.SQL("true")
    if within is not None:
        condition = sql.SQL("a.citizen_id IN (SELECT v.citizen_id FROM ({}) v)").format(within[0])
        params.update(within[1])
    rows = _rows(conn, sql.SQL(TEAM_QUEUE).format(within=condition), params)
    if rows:
        total = int(rows[0]["total"])
    else:  # past the last page the window count is gone with the rows
        total = int(_scalar(conn, sql.SQL(TEAM_QUEUE_TOTAL).format(within=condition), params))
    for row in rows:
        del row["total"]
    return rows, total


def alert(conn: Conn, alert_id: int) -> dict[str, Any] | None:
    """One alert row, or None."""
    rows = _rows(conn, ALERT, {"alert_id": alert_id})
    return rows[0] if rows else None


def findings(conn: Conn, alert_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    """The findings that fed an alert, by measured time."""
    return _rows(conn, FINDINGS, {"alert_id": alert_id, "limit": limit})


def threshold(conn: Conn, threshold_id: int) -> dict[str, Any] | None:
    """One threshold version by its row id, or None."""
    rows = _rows(conn, THRESHOLD, {"threshold_id": threshold_id})
    return rows[0] if rows else None


def metrics_of(rule: str, explanation: dict[str, Any]) -> tuple[str, ...]:
    """The metrics an alert is about: every part of a sign (a blood pressure's systolic and
    diastolic), else those its explanation names, else its rule's."""
    kind, _, metric = rule.partition(":")
    if kind == "threshold" and metric in SIGN_OF.values():
        return parts_of(metric)
    named = explanation.get("metrics", explanation.get("metric"))
    if isinstance(named, str):
        return (named,)
    if isinstance(named, list) and all(isinstance(m, str) for m in named):
        return tuple(named)
    if rule in _RULE_METRICS:
        return _RULE_METRICS[rule]
    return (metric,) if kind in ("threshold", "rate", "missed") and metric else ()


def readings_around(conn: Conn, citizen_id: UUID, metrics: Sequence[str], first: datetime,
                    last: datetime, limit: int = 5000, *,
                    within: tuple[datetime, datetime] | None = None) -> list[dict[str, Any]]:
    """The citizen's readings of `metrics` from a day before `first` to a day after `last`
    (only those measured within `within`, when given)."""
    start, end = first - READINGS_AROUND, last + READINGS_AROUND
    if within is not None:
        start, end = max(start, within[0]), min(end, within[1])
    if not metrics or start >= end:
        return []
    return _rows(conn, READINGS_AROUND_SQL, {
        "citizen_id": citizen_id, "metrics": list(metrics), "start": start, "end": end,
        "limit": limit})


TEAM_SIZES = """
SELECT care_team_id, count(*) FROM citizens WHERE care_team_id IS NOT NULL GROUP BY care_team_id"""
POLICY_UPDATED_AT = "SELECT updated_at FROM escalation_policies WHERE care_team_id = %(team_id)s"
# Every pause, cancelled ones too, as repository.PAUSE reads one.
CITIZEN_PAUSES = """
SELECT p.id, p.citizen_id, lower(p.during) AS start, upper(p.during) AS "end",
       least(upper(p.during), p.cancelled_at) AS in_force_until, p.reason, p.note,
       p.created_by, p.created_at, p.cancelled_at
  FROM alert_pauses p
 WHERE p.citizen_id = %(citizen_id)s
 ORDER BY lower(p.during), p.id"""


def team_sizes(conn: Conn) -> dict[UUID, int]:
    """How many citizens each care team has (teams without any are absent)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return {team: int(n) for team, n in cur.execute(TEAM_SIZES).fetchall()}


def policy_updated_at(conn: Conn, team_id: UUID) -> datetime | None:
    """When the team's own escalation policy was last set; None: it has none (the default)."""
    found: datetime | None = _scalar(conn, POLICY_UPDATED_AT, {"team_id": team_id})
    return found


def citizen_pauses(conn: Conn, citizen_id: UUID) -> list[dict[str, Any]]:
    """Every pause of the citizen's alerts, cancelled ones included, by start."""
    return _rows(conn, CITIZEN_PAUSES, {"citizen_id": citizen_id})
