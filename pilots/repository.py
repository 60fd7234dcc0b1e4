"""The SQL of pilots: pilots, enrolments and leads, and the rows the aggregates are made of.
Functions take a connection and never commit; they take ids the service has cleared."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row, tuple_row

from pilots.models import Enrolment, Lead, Pilot, Viewer

Conn = psycopg.Connection[Any]

# The pilots a viewer may see: every pilot for an active administrator (or the local operator,
# who has no user), else those the user leads while active and still a project lead.
VISIBLE_PILOTS = """
SELECT p.id, p.name, p.description, lower(p.period) AS starts_at,
       upper(p.period) AS ends_at, p.created_by, p.created_at
  FROM pilots p
 WHERE ((%(everything)s AND (%(user)s::uuid IS NULL OR EXISTS (
           SELECT 1 FROM users u WHERE u.id = %(user)s AND u.disabled_at IS NULL)))
    OR EXISTS (SELECT 1 FROM pilot_leads l JOIN users u ON u.id = l.user_id
                WHERE l.pilot_id = p.id AND l.user_id = %(user)s
                  AND u.role = 'project_lead' AND u.disabled_at IS NULL))
 ORDER BY lower(p.period), p.name"""
VISIBLE_PILOT = """
SELECT p.id, p.name, p.description, lower(p.period) AS starts_at,
       upper(p.period) AS ends_at, p.created_by, p.created_at
  FROM pilots p
 WHERE ((%(everything)s AND (%(user)s::uuid IS NULL OR EXISTS (
           SELECT 1 FROM users u WHERE u.id = %(user)s AND u.disabled_at IS NULL)))
    OR EXISTS (SELECT 1 FROM pilot_leads l JOIN users u ON u.id = l.user_id
                WHERE l.pilot_id = p.id AND l.user_id = %(user)s
                  AND u.role = 'project_lead' AND u.disabled_at IS NULL))
   AND p.id = %(pilot)s"""
PILOT = """
SELECT p.id, p.name, p.description, lower(p.period) AS starts_at,
       upper(p.period) AS ends_at, p.created_by, p.created_at
  FROM pilots p WHERE p.id = %s"""
INSERT_PILOT = """
INSERT INTO pilots AS p (name, description, period, created_by, created_at)
VALUES (%s, %s, tstzrange(%s, %s), %s, %s)
RETURNING p.id, p.name, p.description, lower(p.period) AS starts_at,
       upper(p.period) AS ends_at, p.created_by, p.created_at"""

USER_ROLE = "SELECT id, role FROM users WHERE username = %s"
CITIZEN_EXISTS = "SELECT 1 FROM citizens WHERE id = %s"
ADD_LEAD = """
INSERT INTO pilot_leads (pilot_id, user_id, added_by, added_at) VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING"""
REMOVE_LEAD = "DELETE FROM pilot_leads WHERE pilot_id = %s AND user_id = %s"
LEADS = """
SELECT u.username, u.display_name, l.added_at
  FROM pilot_leads l JOIN users u ON u.id = l.user_id
 WHERE l.pilot_id = %s ORDER BY u.username"""

INSERT_ENROLMENT = """
INSERT INTO pilot_enrolments (pilot_id, citizen_id, valid, enrolled_by, enrolled_at)
VALUES (%s, %s, tstzrange(%s, %s), %s, %s)
RETURNING id, pilot_id, citizen_id, lower(valid) AS valid_from,
       upper(valid) AS valid_until, enrolled_by, enrolled_at"""
ENROLMENTS = """
SELECT id, pilot_id, citizen_id, lower(valid) AS valid_from,
       upper(valid) AS valid_until, enrolled_by, enrolled_at
  FROM pilot_enrolments WHERE pilot_id = %s ORDER BY lower(valid), id"""
ENROLMENT = """
SELECT id, pilot_id, citizen_id, lower(valid) AS valid_from,
       upper(valid) AS valid_until, enrolled_by, enrolled_at
  FROM pilot_enrolments WHERE pilot_id = %s AND id = %s FOR UPDATE"""
END_ENROLMENT = "UPDATE pilot_enrolments SET valid = tstzrange(lower(valid), %s) WHERE id = %s"
REMOVE_ENROLMENT = "DELETE FROM pilot_enrolments WHERE id = %s"

# --- what the aggregates are made of: each citizen's enrolments (e) clipped to [lo, hi) ------
CLIPPED_ENROLMENTS = """
WITH e AS (
    SELECT citizen_id, greatest(lower(valid), %(lo)s) AS since,
           least(coalesce(upper(valid), 'infinity'), %(hi)s) AS until
      FROM pilot_enrolments
     WHERE pilot_id = %(pilot)s AND valid && tstzrange(%(lo)s, %(hi)s))
SELECT citizen_id, since, until FROM e ORDER BY citizen_id, since"""
READING_COUNTS = """
WITH e AS (
    SELECT citizen_id, greatest(lower(valid), %(lo)s) AS since,
           least(coalesce(upper(valid), 'infinity'), %(hi)s) AS until
      FROM pilot_enrolments
     WHERE pilot_id = %(pilot)s AND valid && tstzrange(%(lo)s, %(hi)s))
SELECT r.citizen_id, r.metric, count(*)
  FROM readings r JOIN e ON r.citizen_id = e.citizen_id
       AND r.measured_at >= e.since AND r.measured_at < e.until
 GROUP BY r.citizen_id, r.metric"""
READING_TIMES = """
WITH e AS (
    SELECT citizen_id, greatest(lower(valid), %(lo)s) AS since,
           least(coalesce(upper(valid), 'infinity'), %(hi)s) AS until
      FROM pilot_enrolments
     WHERE pilot_id = %(pilot)s AND valid && tstzrange(%(lo)s, %(hi)s))
SELECT r.citizen_id, r.metric, r.measured_at
  FROM readings r JOIN e ON r.citizen_id = e.citizen_id
       AND r.measured_at >= e.since AND r.measured_at < e.until
 WHERE r.metric = ANY(%(metrics)s)
 ORDER BY r.citizen_id, r.metric, r.measured_at"""
ALERTS = """
WITH e AS (
    SELECT citizen_id, greatest(lower(valid), %(lo)s) AS since,
           least(coalesce(upper(valid), 'infinity'), %(hi)s) AS until
      FROM pilot_enrolments
     WHERE pilot_id = %(pilot)s AND valid && tstzrange(%(lo)s, %(hi)s))
SELECT a.citizen_id, a.rule, a.severity, a.opened_at, a.acknowledged_at, a.outcome
  FROM alerts a JOIN e ON a.citizen_id = e.citizen_id
       AND a.opened_at >= e.since AND a.opened_at < e.until"""
PLANS = """
SELECT citizen_id, plan, lower(valid), upper(valid), settings
  FROM citizen_plans WHERE citizen_id = ANY(%s) AND valid && tstzrange(%s, %s)"""
PAUSES = """
SELECT citizen_id, lower(during), upper(during)
  FROM alert_pauses
 WHERE citizen_id = ANY(%s) AND cancelled_at IS NULL AND during && tstzrange(%s, %s)"""


def _visible_params(viewer: Viewer) -> dict[str, Any]:
    return {"everything": viewer.everything, "user": viewer.user_id}


def visible_pilots(conn: Conn, viewer: Viewer) -> list[Pilot]:
    with conn.cursor(row_factory=class_row(Pilot)) as cur:
        return cur.execute(VISIBLE_PILOTS, _visible_params(viewer)).fetchall()


def visible_pilot(conn: Conn, viewer: Viewer, pilot_id: UUID) -> Pilot | None:
    with conn.cursor(row_factory=class_row(Pilot)) as cur:
        return cur.execute(VISIBLE_PILOT, {**_visible_params(viewer), "pilot": pilot_id}
                           ).fetchone()


def pilot(conn: Conn, pilot_id: UUID) -> Pilot | None:
    with conn.cursor(row_factory=class_row(Pilot)) as cur:
        return cur.execute(PILOT, (pilot_id,)).fetchone()


def insert_pilot(conn: Conn, name: str, description: str, starts_at: datetime,
                 ends_at: datetime | None, created_by: str, now: datetime) -> Pilot:
    with conn.cursor(row_factory=class_row(Pilot)) as cur:
        row = cur.execute(INSERT_PILOT, (name, description, starts_at, ends_at, created_by, now)
                          ).fetchone()
    assert row is not None
    return row


def user_role(conn: Conn, username: str) -> tuple[UUID, str] | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(USER_ROLE, (username,)).fetchone()
    return None if row is None else (row[0], row[1])


def citizen_exists(conn: Conn, citizen_id: UUID) -> bool:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(CITIZEN_EXISTS, (citizen_id,)).fetchone() is not None


def add_lead(conn: Conn, pilot_id: UUID, user_id: UUID, added_by: str, now: datetime) -> None:
    conn.execute(ADD_LEAD, (pilot_id, user_id, added_by, now))


def remove_lead(conn: Conn, pilot_id: UUID, user_id: UUID) -> None:
    conn.execute(REMOVE_LEAD, (pilot_id, user_id))


def leads(conn: Conn, pilot_id: UUID) -> list[Lead]:
    with conn.cursor(row_factory=class_row(Lead)) as cur:
        return cur.execute(LEADS, (pilot_id,)).fetchall()


def insert_enrolment(conn: Conn, pilot_id: UUID, citizen_id: UUID, valid_from: datetime,
                     valid_until: datetime | None, enrolled_by: str, now: datetime) -> Enrolment:
    with conn.cursor(row_factory=class_row(Enrolment)) as cur:
        row = cur.execute(INSERT_ENROLMENT, (pilot_id, citizen_id, valid_from, valid_until,
                                             enrolled_by, now)).fetchone()
    assert row is not None
    return row


def enrolments(conn: Conn, pilot_id: UUID) -> list[Enrolment]:
    with conn.cursor(row_factory=class_row(Enrolment)) as cur:
        return cur.execute(ENROLMENTS, (pilot_id,)).fetchall()


def enrolment(conn: Conn, pilot_id: UUID, enrolment_id: int) -> Enrolment | None:
    """The enrolment, locked until the transaction ends."""
    with conn.cursor(row_factory=class_row(Enrolment)) as cur:
        return cur.execute(ENROLMENT, (pilot_id, enrolment_id)).fetchone()


def end_enrolment(conn: Conn, enrolment_id: int, at: datetime) -> None:
    conn.execute(END_ENROLMENT, (at, enrolment_id))


def remove_enrolment(conn: Conn, enrolment_id: int) -> None:
    conn.execute(REMOVE_ENROLMENT, (enrolment_id,))


def _rows(conn: Conn, query: str, params: Any) -> list[tuple[Any, ...]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


def clipped_enrolments(conn: Conn, pilot_id: UUID, lo: datetime,
                       hi: datetime) -> list[tuple[UUID, datetime, datetime]]:
    """(citizen, since, until) of each enrolment overlapping [lo, hi), clipped to it."""
    return [(r[0], r[1], r[2]) for r in
            _rows(conn, CLIPPED_ENROLMENTS, {"pilot": pilot_id, "lo": lo, "hi": hi})]


def reading_counts(conn: Conn, pilot_id: UUID, lo: datetime,
                   hi: datetime) -> list[tuple[UUID, str, int]]:
    """(citizen, metric, readings) measured while enrolled within [lo, hi)."""
    return [(r[0], r[1], int(r[2])) for r in
            _rows(conn, READING_COUNTS, {"pilot": pilot_id, "lo": lo, "hi": hi})]


def reading_times(conn: Conn, pilot_id: UUID, lo: datetime, hi: datetime,
                  metrics: list[str]) -> list[tuple[UUID, str, datetime]]:
    """(citizen, metric, measured_at) of `metrics` measured while enrolled within [lo, hi)."""
    return [(r[0], r[1], r[2]) for r in _rows(
        conn, READING_TIMES, {"pilot": pilot_id, "lo": lo, "hi": hi, "metrics": metrics})]


def alerts(conn: Conn, pilot_id: UUID, lo: datetime, hi: datetime
           ) -> list[tuple[UUID, str, str, datetime, datetime | None, str | None]]:
    """(citizen, rule, severity, opened_at, acknowledged_at, outcome) of alerts opened while
    enrolled within [lo, hi)."""
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in
            _rows(conn, ALERTS, {"pilot": pilot_id, "lo": lo, "hi": hi})]


def plans(conn: Conn, citizens: list[UUID], lo: datetime, hi: datetime
          ) -> list[tuple[UUID, str, datetime, datetime | None, dict[str, Any]]]:
    """(citizen, plan, valid_from, valid_until, settings) of plans in force within [lo, hi)."""
    return [(r[0], r[1], r[2], r[3], r[4]) for r in _rows(conn, PLANS, (citizens, lo, hi))]


def pauses(conn: Conn, citizens: list[UUID], lo: datetime,
           hi: datetime) -> list[tuple[UUID, datetime, datetime | None]]:
    return [(r[0], r[1], r[2]) for r in _rows(conn, PAUSES, (citizens, lo, hi))]
