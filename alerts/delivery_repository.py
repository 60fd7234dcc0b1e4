"""SQL of delivery: alert history as events (the SSE stream, webhook bodies), the webhook
outbox and its attempts, the screen-message outbox. Functions take a connection and never
commit; claiming queries lock rows (SKIP LOCKED) until the caller's transaction ends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]

# alert_history's trigger notifies this channel with the history id at each commit.
LISTEN_ALERT_CHANGES = "LISTEN telecare_alert_changes"

# An alert change as the care team sees it: the history row with what it is about.
_EVENTS = """
SELECT h.id, h.stream_position, h.alert_id, h.care_team_id, h.at, h.action, h.actor,
       h.severity, h.state, h.pushed, a.citizen_id, a.rule, a.is_current, a.summary
  FROM alert_history h
  JOIN alerts a ON a.id = h.alert_id"""
TEAM_EVENTS_AFTER = _EVENTS + """
 WHERE h.care_team_id = %s AND h.stream_position > %s
 ORDER BY h.stream_position
 LIMIT %s"""
EVENTS_BY_ID = _EVENTS + """
 WHERE h.id = ANY(%s)
 ORDER BY h.stream_position"""

CLAIM_DUE_DELIVERY = """
SELECT d.id, d.webhook_id, d.history_id, d.attempts, w.url, w.secret, w.active
  FROM webhook_deliveries d
  JOIN webhooks w ON w.id = d.webhook_id
 WHERE d.state = 'pending' AND d.next_attempt_at <= %s
 ORDER BY d.next_attempt_at, d.id
 LIMIT 1
   FOR UPDATE OF d SKIP LOCKED"""
RECORD_ATTEMPT = """
INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, error, duration_ms)
VALUES (%s, %s, %s, %s, %s)"""
SETTLE_DELIVERY = """
UPDATE webhook_deliveries
   SET state = %(state)s, attempts = %(attempts)s, next_attempt_at = %(next_attempt_at)s,
       delivered_at = %(delivered_at)s
 WHERE id = %(id)s"""
NEXT_DUE = "SELECT min(next_attempt_at) AS due FROM webhook_deliveries WHERE state = 'pending'"

# The citizen's home screen is the one paired to them now (the newest pairing if, during a
# handover, two are).
CLAIM_UNSENT_SCREEN_MESSAGES = """
SELECT m.id, m.citizen_id, m.kind, m.alert_id, m.body, m.created_at, s.device_id
  FROM screen_messages m
  LEFT JOIN LATERAL (
        SELECT p.device_id
          FROM device_pairings p
          JOIN devices d ON d.id = p.device_id
         WHERE p.citizen_id = m.citizen_id AND d.kind = 'home_screen'
           AND p.valid @> %(now)s::timestamptz
         ORDER BY lower(p.valid) DESC
         LIMIT 1) s ON true
 WHERE m.sent_at IS NULL AND m.undeliverable IS NULL
 ORDER BY m.id
 LIMIT %(limit)s
   FOR UPDATE OF m SKIP LOCKED"""
MARK_SCREEN_SENT = "UPDATE screen_messages SET sent_at = %s WHERE id = ANY(%s)"
MARK_SCREEN_UNDELIVERABLE = "UPDATE screen_messages SET undeliverable = %s WHERE id = %s"


def listen_alert_changes(conn: Conn) -> None:
    conn.execute(LISTEN_ALERT_CHANGES)


async def listen_alert_changes_async(conn: AsyncConn) -> None:
    await conn.execute(LISTEN_ALERT_CHANGES)




def team_events_after(conn: Conn, team_id: UUID, after: int, limit: int) -> list[dict[str, Any]]:
    """The team's alert changes committed after stream position `after`, in commit order."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(TEAM_EVENTS_AFTER, (team_id, after, limit)).fetchall()


def events_by_id(conn: Conn, history_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The alert changes with these history ids (the ones committed), oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(EVENTS_BY_ID, (list(history_ids),)).fetchall()


async def events_by_id_async(conn: AsyncConn, history_ids: Sequence[int]) -> list[dict[str, Any]]:
    """events_by_id on an async connection (the API's stream)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(EVENTS_BY_ID, (list(history_ids),))
        return await cur.fetchall()


def event_data(row: dict[str, Any]) -> dict[str, Any]:
    """An alert change as JSON-ready data: the SSE event's data and a webhook's body."""
    return {
        "history_id": row["id"], "action": row["action"], "alert_id": row["alert_id"],
        "citizen_id": str(row["citizen_id"]),
        "care_team_id": None if row["care_team_id"] is None else str(row["care_team_id"]),
        "rule": row["rule"], "severity": row["severity"], "state": row["state"],
        "is_current": row["is_current"], "pushed": row["pushed"], "summary": row["summary"],
        "actor": row["actor"], "at": row["at"].isoformat(),
    }


def claim_due_delivery(conn: Conn, now: datetime) -> dict[str, Any] | None:
    """The oldest due pending delivery, locked for this transaction; None when none is due
    (or every due one is being sent by another sender)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(CLAIM_DUE_DELIVERY, (now,)).fetchone()


def record_attempt(conn: Conn, delivery_id: int, at: datetime, status_code: int | None,
                   error: str | None, duration_ms: float) -> None:
    conn.execute(RECORD_ATTEMPT, (delivery_id, at, status_code, error, duration_ms))


def settle_delivery(conn: Conn, delivery_id: int, *, state: str, attempts: int,
                    next_attempt_at: datetime, delivered_at: datetime | None) -> None:
    conn.execute(SETTLE_DELIVERY, {"id": delivery_id, "state": state, "attempts": attempts,
                                   "next_attempt_at": next_attempt_at,
                                   "delivered_at": delivered_at})


def next_due(conn: Conn) -> datetime | None:
    """When the next pending delivery is due, if any is pending."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(NEXT_DUE).fetchone()
    return None if row is None else row["due"]


def claim_unsent_screen_messages(conn: Conn, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Unsent screen messages, oldest first, with the citizen's home screen now (device_id
    None: they have none), locked for this transaction."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(CLAIM_UNSENT_SCREEN_MESSAGES, {"now": now, "limit": limit}).fetchall()


def mark_screen_sent(conn: Conn, message_ids: Sequence[int], at: datetime) -> None:
    conn.execute(MARK_SCREEN_SENT, (at, list(message_ids)))


def mark_screen_undeliverable(conn: Conn, message_id: int, reason: str) -> None:
    conn.execute(MARK_SCREEN_UNDELIVERABLE, (reason, message_id))

