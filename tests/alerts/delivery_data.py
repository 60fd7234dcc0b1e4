"""Rows the delivery tests start from, written as alerts/service.py writes them: a care team
with a citizen, an alert, its history rows, webhooks and their outbox rows, screen messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from devices import service

Conn = psycopg.Connection[Any]


def care_team(conn: Conn) -> UUID:
    row = conn.execute("INSERT INTO care_teams (name) VALUES (%s) RETURNING id",
                       (f"team-{uuid.uuid4().hex[:8]}",)).fetchone()
    assert row is not None
    return UUID(str(row[0]))


def team_citizen(conn: Conn, team_id: UUID) -> UUID:
    citizen_id = service.enrol_citizen(conn, "Test Citizen", ["copd"])
    conn.execute("UPDATE citizens SET care_team_id = %s WHERE id = %s", (team_id, citizen_id))
    return citizen_id


def open_alert(conn: Conn, citizen_id: UUID, team_id: UUID | None, at: datetime,
               rule: str = "emergency_button", severity: str = "red") -> int:
    row = conn.execute(
        "INSERT INTO alerts (citizen_id, care_team_id, rule, severity, state, first_measured_at,"
        " last_measured_at, opened_at, updated_at, is_current, summary)"
        " VALUES (%s, %s, %s, %s, 'open', %s, %s, %s, %s, true, %s) RETURNING id",
        (citizen_id, team_id, rule, severity, at, at, at, at, f"{rule} raised")).fetchone()
    assert row is not None
    return int(row[0])


def history(conn: Conn, alert_id: int, team_id: UUID | None, at: datetime,
            action: str = "opened", severity: str = "red", state: str = "open",
            pushed: bool = True) -> int:
    row = conn.execute(
        "INSERT INTO alert_history (alert_id, care_team_id, at, action, actor, severity, state,"
        " pushed) VALUES (%s, %s, %s, %s, 'engine', %s, %s, %s) RETURNING id",
        (alert_id, team_id, at, action, severity, state, pushed)).fetchone()
    assert row is not None
    return int(row[0])


def webhook(conn: Conn, team_id: UUID, url: str, secret: str = "s3cret") -> int:
    row = conn.execute("INSERT INTO webhooks (care_team_id, url, secret) VALUES (%s, %s, %s)"
                       " RETURNING id", (team_id, url, secret)).fetchone()
    assert row is not None
    return int(row[0])


def delivery(conn: Conn, webhook_id: int, history_id: int, at: datetime) -> int:
    row = conn.execute("INSERT INTO webhook_deliveries (webhook_id, history_id, next_attempt_at,"
                       " created_at) VALUES (%s, %s, %s, %s) RETURNING id",
                       (webhook_id, history_id, at, at)).fetchone()
    assert row is not None
    return int(row[0])


def screen_message(conn: Conn, citizen_id: UUID, at: datetime, kind: str = "seen",
                   body: dict[str, Any] | None = None, alert_id: int | None = None) -> int:
    row = conn.execute("INSERT INTO screen_messages (citizen_id, kind, alert_id, body, created_at)"
                       " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                       (citizen_id, kind, alert_id, Jsonb(body or {}), at)).fetchone()
    assert row is not None
    return int(row[0])
