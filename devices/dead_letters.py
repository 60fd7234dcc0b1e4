"""Dead letters: what devices sent that could not be stored, and why.

Ingest writes them and the API reports them; both reach the table only through this module."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from devices.repository import Conn


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: datetime
    topic: str
    device_id: str | None
    seq: int | None
    reason: str
    detail: str
    payload: bytes  # bounded copy
    payload_bytes: int  # the full size
    payload_sha256: bytes  # of the full payload

INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (received_at, topic, device_id, seq, reason, detail, payload,
                          payload_bytes, payload_sha256)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING"""
DEAD_LETTER_SUMMARY = """
SELECT reason, count(*) AS count, count(DISTINCT device_id) AS devices,
       min(received_at) AS first_at, max(received_at) AS last_at
  FROM dead_letters
 WHERE received_at >= %(since)s
 GROUP BY reason
 ORDER BY count DESC, reason"""
RECENT_DEAD_LETTERS = """
SELECT id, received_at, topic, device_id, seq, reason, detail, payload_bytes
  FROM dead_letters
 WHERE received_at >= %(since)s
 ORDER BY received_at DESC, id DESC
 LIMIT %(limit)s"""


def insert_dead_letters(conn: Conn, letters: Sequence[DeadLetter]) -> None:
    if letters:
        with conn.cursor() as cur:
            cur.executemany(INSERT_DEAD_LETTER, [
                (d.received_at, d.topic, d.device_id, d.seq, d.reason, d.detail, d.payload,
                 d.payload_bytes, d.payload_sha256) for d in letters])


def dead_letter_summary(conn: Conn, since: datetime) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(DEAD_LETTER_SUMMARY, {"since": since}).fetchall()


def recent_dead_letters(conn: Conn, since: datetime, limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(RECENT_DEAD_LETTERS, {"since": since, "limit": limit}).fetchall()
