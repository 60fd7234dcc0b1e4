"""SQL of replay runs and their result set (migrations/0007_replay.sql). Nothing here touches
the live alert tables, so nothing a replay writes is pushed, delivered or notified.
Functions take a connection and never commit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[Any]


def _json(value: Any) -> Jsonb:
    # Explanations may hold times and decimals: stored as text, as the live path stores them.
    return Jsonb(value, dumps=lambda obj: json.dumps(obj, default=str))


INSERT_RUN = """
INSERT INTO replay_runs (period, citizen_ids, proposed, tick_s, requested_by, started_at)
VALUES (tstzrange(%(start)s, %(end)s, '[)'), %(citizen_ids)s, %(proposed)s, %(tick_s)s,
        %(requested_by)s, %(started_at)s)
RETURNING id"""
FINISH_RUN = """
UPDATE replay_runs SET state = %(state)s, finished_at = %(finished_at)s, citizens = %(citizens)s,
       items = %(items)s, findings = %(findings)s, alerts = %(alerts)s
 WHERE id = %(id)s"""
# Who a run without named citizens looks at: everyone with data or a plan in the period.
CITIZENS_IN_PERIOD = """
SELECT citizen_id FROM readings WHERE measured_at >= %(start)s AND measured_at < %(end)s
UNION
SELECT citizen_id FROM device_events WHERE measured_at >= %(start)s AND measured_at < %(end)s
UNION
SELECT citizen_id FROM citizen_plans WHERE valid && tstzrange(%(start)s, %(end)s, '[)')
ORDER BY 1"""
POLICIES = """
SELECT c.id AS citizen_id, c.care_team_id, p.steps
  FROM citizens c LEFT JOIN escalation_policies p ON p.care_team_id = c.care_team_id
 WHERE c.id = ANY(%s)"""
# The devices each citizen had during the period (their status then is not stored).
PAIRED_DEVICES = """
SELECT p.citizen_id, d.id AS device_id, d.kind
  FROM device_pairings p JOIN devices d ON d.id = p.device_id
 WHERE p.citizen_id = ANY(%(citizens)s) AND p.valid && tstzrange(%(start)s, %(end)s, '[)')
 ORDER BY p.citizen_id, d.id"""
INSERT_FINDING = """
INSERT INTO replay_findings (run_id, citizen_id, rule, occurrence, alert_seq, severity,
                             measured_at, evaluated_at, is_current, data_age_s, delay_cause,
                             threshold_id, threshold_version, held, clears, summary, explanation)
VALUES (%(run_id)s, %(citizen_id)s, %(rule)s, %(occurrence)s, %(alert_seq)s, %(severity)s,
        %(measured_at)s, %(evaluated_at)s, %(is_current)s, %(data_age_s)s, %(delay_cause)s,
        %(threshold_id)s, %(threshold_version)s, %(held)s, %(clears)s, %(summary)s,
        %(explanation)s)"""
INSERT_ALERT = """
INSERT INTO replay_alerts (run_id, seq, citizen_id, rule, severity, state, count,
                           first_measured_at, last_measured_at, opened_at, updated_at, is_current,
                           held, threshold_id, threshold_version, escalation_step, resolved_at,
                           outcome, summary, explanation)
VALUES (%(run_id)s, %(seq)s, %(citizen_id)s, %(rule)s, %(severity)s, %(state)s, %(count)s,
        %(first_measured_at)s, %(last_measured_at)s, %(opened_at)s, %(updated_at)s,
        %(is_current)s, %(held)s, %(threshold_id)s, %(threshold_version)s,
        %(escalation_step)s, %(resolved_at)s, %(outcome)s, %(summary)s, %(explanation)s)"""
RUN_ALERTS = """
SELECT * FROM replay_alerts WHERE run_id = %s ORDER BY citizen_id, rule, first_measured_at, seq"""


def insert_run(conn: Conn, start: datetime, end: datetime, citizen_ids: Sequence[UUID] | None,
               proposed: dict[str, Any] | None, tick_s: float | None, requested_by: str,
               started_at: datetime) -> int:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(INSERT_RUN, {
            "start": start, "end": end, "citizen_ids": list(citizen_ids) if citizen_ids else None,
            "proposed": _json(proposed) if proposed is not None else None, "tick_s": tick_s,
            "requested_by": requested_by, "started_at": started_at}).fetchone()
    assert row is not None
    return int(row["id"])


def finish_run(conn: Conn, run_id: int, state: str, finished_at: datetime, citizens: int,
               items: int, findings: int, alerts: int) -> None:
    conn.execute(FINISH_RUN, {"id": run_id, "state": state, "finished_at": finished_at,
                              "citizens": citizens, "items": items, "findings": findings,
                              "alerts": alerts})


def citizens_in_period(conn: Conn, start: datetime, end: datetime) -> list[UUID]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [row["citizen_id"] for row in
                cur.execute(CITIZENS_IN_PERIOD, {"start": start, "end": end})]


def policies(conn: Conn, citizens: Sequence[UUID]) -> list[dict[str, Any]]:
    """Each citizen's care team and its escalation steps (None: the default chain)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(POLICIES, (list(citizens),)).fetchall()


def paired_devices(conn: Conn, citizens: Sequence[UUID], start: datetime,
                   end: datetime) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(PAIRED_DEVICES, {"citizens": list(citizens), "start": start,
                                            "end": end}).fetchall()


def insert_findings(conn: Conn, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        with conn.cursor() as cur:
            cur.executemany(INSERT_FINDING, [{**row, "explanation": _json(row["explanation"])}
                                             for row in rows])


def insert_alerts(conn: Conn, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        with conn.cursor() as cur:
            cur.executemany(INSERT_ALERT, [{**row, "explanation": _json(row["explanation"])}
                                           for row in rows])


def run_alerts(conn: Conn, run_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(RUN_ALERTS, (run_id,)).fetchall()
