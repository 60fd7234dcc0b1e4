"""Dead letters: what devices sent that could not be stored, and why.

One row per distinct message (redeliveries are counted on it), keeping the whole payload up to
the protocol's size limit so that it can be replayed; refused items of a message that was read
are child rows. Ingest writes them and the API reports them; both reach the tables only
through this module."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row, tuple_row

from devices.repository import Conn

# The reason of a message that was read but had items refused; the items carry theirs.
ITEMS_REJECTED = "items_rejected"


@dataclass(frozen=True, slots=True)
class ItemRefusal:
    index: int  # position in the message's list
    seq: int | None  # None when the item had no readable sequence number
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes  # whole, or empty when it exceeded the size limit
    payload_bytes: int  # the full size
    payload_sha256: bytes  # of what was received, as far as it was kept
    items: tuple[ItemRefusal, ...] = ()


# A redelivered message is one row: its delivery count and last time go up.
INSERT_DEAD_LETTER = """
INSERT INTO dead_letters AS d (received_at, last_received_at, topic, device_id, reason, detail,
                               payload, payload_bytes, payload_sha256)
VALUES (%(received_at)s, %(received_at)s, %(topic)s, %(device_id)s, %(reason)s, %(detail)s,
        %(payload)s, %(payload_bytes)s, %(payload_sha256)s)
ON CONFLICT (payload_sha256, payload_bytes, topic) DO UPDATE
   SET deliveries = d.deliveries + 1,
       last_received_at = greatest(d.last_received_at, excluded.last_received_at)
RETURNING id"""
INSERT_ITEM = """
INSERT INTO dead_letter_items (dead_letter_id, item_index, seq, reason, detail)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING"""
# Message-level reasons and item-level reasons, counted together.
DEAD_LETTER_SUMMARY = """
SELECT reason, count(*) AS count, count(DISTINCT device_id) AS devices,
       min(received_at) AS first_at, max(last_received_at) AS last_at
  FROM (SELECT reason, device_id, received_at, last_received_at
          FROM dead_letters
         WHERE last_received_at >= %(since)s AND reason <> 'items_rejected'
        UNION ALL
        SELECT i.reason, d.device_id, d.received_at, d.last_received_at
          FROM dead_letter_items i JOIN dead_letters d ON d.id = i.dead_letter_id
         WHERE d.last_received_at >= %(since)s) AS refused
 GROUP BY reason
 ORDER BY count DESC, reason"""
RECENT_DEAD_LETTERS = """
SELECT d.id, d.received_at, d.last_received_at, d.deliveries, d.topic, d.device_id,
       (SELECT min(i.seq) FROM dead_letter_items i WHERE i.dead_letter_id = d.id) AS seq,
       d.reason, d.detail, d.payload_bytes,
       (SELECT count(*) FROM dead_letter_items i WHERE i.dead_letter_id = d.id) AS items
  FROM dead_letters d
 WHERE d.last_received_at >= %(since)s
 ORDER BY d.last_received_at DESC, d.id DESC
 LIMIT %(limit)s"""
PURGE_DEAD_LETTERS = """
DELETE FROM dead_letters
 WHERE id IN (SELECT id FROM dead_letters WHERE last_received_at < %s ORDER BY id LIMIT %s)"""


def insert_dead_letters(conn: Conn, letters: Sequence[DeadLetter]) -> None:
    """Record each letter (once per distinct message) with its refused items."""
    with conn.cursor(row_factory=tuple_row) as cur:
        for letter in letters:
            row = cur.execute(INSERT_DEAD_LETTER, {
                "received_at": letter.received_at, "topic": letter.topic,
                "device_id": letter.device_id, "reason": letter.reason,
                "detail": letter.detail, "payload": letter.payload,
                "payload_bytes": letter.payload_bytes,
                "payload_sha256": letter.payload_sha256}).fetchone()
            assert row is not None
            if letter.items:
                cur.executemany(INSERT_ITEM, [(row[0], i.index, i.seq, i.reason, i.detail)
                                              for i in letter.items])


def purge_dead_letters(conn: Conn, before: datetime, limit: int = 10_000) -> int:
    """Delete up to `limit` dead letters last delivered before `before`; returns how many."""
    with conn.cursor() as cur:
        cur.execute(PURGE_DEAD_LETTERS, (before, limit))
        return cur.rowcount


def dead_letter_summary(conn: Conn, since: datetime) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(DEAD_LETTER_SUMMARY, {"since": since}).fetchall()


def recent_dead_letters(conn: Conn, since: datetime, limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(RECENT_DEAD_LETTERS, {"since": since, "limit": limit}).fetchall()
