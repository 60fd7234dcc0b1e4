"""SQL that loads what the rules look at, for many citizens at once: one query per kind per
batch, never one per reading. Functions take a connection and never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row, dict_row

from core import locks

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class QueuedItem:
    """What triage reads of a queue row."""

    id: int
    source: str
    citizen_id: UUID
    name: str
    value: float | None
    quality: str | None

# The engine takes queued items that no other transaction holds: emergency-button presses first
# (then a press waits for one batch, not for the backlog), then every item of the citizens who
# have the oldest ones. A batch is bounded in citizens, because evaluation costs per citizen:
# behind a backlog each citizen's evaluation covers more items, and a batch still takes about
# as long. Deleting the items in the transaction that records their findings is what makes
# evaluation exactly once.
# The citizens of a batch are found among this many oldest items per citizen wanted.
OLDEST_LOOK = 20
# A message's parts (a blood pressure's systolic, diastolic and pulse) are queued as rows of their
# own. A batch that takes one part takes them all, so that the rules judge a measurement whole:
# the engine's history cache holds only what it has taken, and a part left queued would be judged
# again in the next batch as a measurement of its own. A batch may so exceed its rows by the
# parts of its last message.
_TAKEN = """{chosen}
DELETE FROM evaluation_queue WHERE id IN (
    WITH picked AS ({ids})
    SELECT id FROM picked
    UNION
    SELECT part.id FROM evaluation_queue part
      JOIN evaluation_queue p ON p.citizen_id = part.citizen_id AND p.device_id = part.device_id
                             AND p.measured_at = part.measured_at AND p.seq = part.seq
     WHERE p.id IN (SELECT id FROM picked) AND p.source = 'reading' AND part.source = 'reading')
RETURNING id, source, citizen_id, device_id, name, measured_at, seq, value, data, quality,
          received_at, late, delay_cause, clock_suspect"""
TAKE_URGENT = _TAKEN.format(chosen="", ids="""
SELECT id FROM evaluation_queue WHERE source = 'event' AND name = 'emergency_button'
 ORDER BY id LIMIT %(rows)s FOR UPDATE SKIP LOCKED""")  # as the partial index says
TAKE_OLDEST_CITIZENS = _TAKEN.format(chosen="""
WITH oldest AS (SELECT id, citizen_id FROM evaluation_queue ORDER BY id LIMIT %(look)s),
     chosen AS (SELECT citizen_id FROM oldest GROUP BY citizen_id
                 ORDER BY min(id) LIMIT %(citizens)s)""", ids="""
SELECT id FROM evaluation_queue WHERE citizen_id IN (SELECT citizen_id FROM chosen)
 ORDER BY id LIMIT %(rows)s FOR UPDATE SKIP LOCKED""")
QUEUE_LENGTH = "SELECT count(*) AS n FROM evaluation_queue"
# Whether anything is queued (by the primary key: stops at the first row no other transaction
# is deleting).
ANYTHING_QUEUED = "SELECT EXISTS (SELECT 1 FROM evaluation_queue) AS queued"
# What the triage lane looks at: the items queued after those it has seen, oldest first.
QUEUED_AFTER = """
SELECT id, source, citizen_id, name, value, quality FROM evaluation_queue
 WHERE id > %s ORDER BY id LIMIT %s"""
# Every item of the given citizens queued up to `upto` (a citizen's items stay in order).
TAKE_CITIZENS = _TAKEN.format(chosen="", ids="""
SELECT id FROM evaluation_queue WHERE citizen_id = ANY(%s) AND id <= %s
 ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""")
CONFIGURATION_VERSION = "SELECT version FROM alert_configuration_version"
TRY_LEAD = "SELECT pg_try_advisory_lock(%s) AS leading"
LISTEN_EVALUATION = "LISTEN telecare_evaluation"

# Each citizen's own window [since, until]: a late reading measured two days ago needs the
# history before it, not the last three days before now.
READINGS_IN_WINDOWS = """
SELECT r.citizen_id, r.device_id, r.metric, r.measured_at, r.seq, r.value, r.received_at,
       r.late, r.delay_cause, r.quality, r.clock_suspect
  FROM unnest(%s::uuid[], %s::timestamptz[], %s::timestamptz[]) AS w(citizen_id, since, until)
  JOIN readings r ON r.citizen_id = w.citizen_id
                 AND r.measured_at >= w.since AND r.measured_at <= w.until
 ORDER BY r.citizen_id, r.measured_at, r.seq, r.metric"""
EVENTS_IN_WINDOWS = """
SELECT e.citizen_id, e.device_id, e.kind, e.measured_at, e.seq, e.received_at, e.data,
       e.late, e.delay_cause, e.clock_suspect
  FROM unnest(%s::uuid[], %s::timestamptz[], %s::timestamptz[]) AS w(citizen_id, since, until)
  JOIN device_events e ON e.citizen_id = w.citizen_id
                      AND e.measured_at >= w.since AND e.measured_at <= w.until
 ORDER BY e.citizen_id, e.measured_at, e.seq"""
# Devices the citizen had at `at`, their status, and dead letters since `dead_since`.
DEVICES_AT = """
SELECT p.citizen_id, d.id AS device_id, d.kind, s.online, s.status_received_at,
       s.last_seen_at, s.battery_pct,
       (SELECT count(*) FROM dead_letters l
         WHERE l.device_id = d.id AND l.last_received_at >= %(dead_since)s) AS dead_letters
  FROM device_pairings p
  JOIN devices d ON d.id = p.device_id
  LEFT JOIN device_status s ON s.device_id = d.id
 WHERE p.citizen_id = ANY(%(citizens)s) AND p.valid @> %(at)s
 ORDER BY p.citizen_id, d.id"""
# Plan periods in force at `at` (every period when `at` is NULL: replay picks by time).
PLANS = """
SELECT citizen_id, plan, settings, lower(valid) AS start, upper(valid) AS end
  FROM citizen_plans
 WHERE citizen_id = ANY(%(citizens)s) AND (%(at)s::timestamptz IS NULL OR valid @> %(at)s)
 ORDER BY citizen_id, plan, lower(valid)"""
# The newest version valid at `at` per citizen and metric.
THRESHOLDS_AT = """
SELECT DISTINCT ON (citizen_id, metric)
       citizen_id, id, metric, version, alert_low, warning_low, warning_high, alert_high,
       valid_from
  FROM thresholds
 WHERE citizen_id = ANY(%(citizens)s) AND valid_from <= %(at)s
 ORDER BY citizen_id, metric, valid_from DESC, version DESC"""
# Every version (replay picks the one in force at each step).
THRESHOLD_VERSIONS = """
SELECT citizen_id, id, metric, version, alert_low, warning_low, warning_high, alert_high,
       valid_from
  FROM thresholds
 WHERE citizen_id = ANY(%(citizens)s)
 ORDER BY citizen_id, metric, valid_from, version"""
# A pause is in force from its start until its end or its cancellation, whichever is first
# (least() skips a NULL), as the lifecycle's release reads it.
PAUSES_OVERLAPPING = """
SELECT citizen_id, lower(during) AS start, least(upper(during), cancelled_at) AS end
  FROM alert_pauses
 WHERE citizen_id = ANY(%(citizens)s)
   AND (cancelled_at IS NULL OR cancelled_at > lower(during))
   AND lower(during) <= %(until)s
   AND (least(upper(during), cancelled_at) IS NULL OR least(upper(during), cancelled_at) > %(since)s)
 ORDER BY citizen_id, lower(during)"""
ACTIVE_RULES = """
SELECT citizen_id, rule FROM alerts WHERE citizen_id = ANY(%s) AND state <> 'resolved'"""
CARE_TEAMS = "SELECT id, care_team_id FROM citizens WHERE id = ANY(%s)"
# Who the clock tick looks at: every citizen following a plan now.
CITIZENS_WITH_PLANS = """
SELECT DISTINCT citizen_id FROM citizen_plans WHERE valid @> %(at)s ORDER BY citizen_id"""


def _rows(conn: Conn, query: str, params: Sequence[Any] | dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def take_queue_batch(conn: Conn, rows: int, citizens: int) -> list[dict[str, Any]]:
    """Delete and return up to `rows` queued items: the oldest emergency-button presses, then
    the items of the (up to) `citizens` citizens with the oldest ones, in queue order."""
    taken = _rows(conn, TAKE_URGENT, {"rows": rows})
    if len(taken) < rows:
        taken += _rows(conn, TAKE_OLDEST_CITIZENS, {"rows": rows - len(taken),
                                                    "citizens": citizens,
                                                    "look": citizens * OLDEST_LOOK})
    return sorted(taken, key=lambda row: row["id"])


def queued_after(conn: Conn, after: int, limit: int) -> list[QueuedItem]:
    """Up to `limit` items queued after id `after`, oldest first: what triage needs of them."""
    with conn.cursor(row_factory=class_row(QueuedItem)) as cur:
        return cur.execute(QUEUED_AFTER, (after, limit)).fetchall()


def take_citizens(conn: Conn, citizens: Sequence[UUID], upto: int,
                  limit: int) -> list[dict[str, Any]]:
    """Delete and return the oldest `limit` items of `citizens` queued up to id `upto` (in
    queue order)."""
    return sorted(_rows(conn, TAKE_CITIZENS, (list(citizens), upto, limit)),
                  key=lambda row: row["id"])


def configuration_version(conn: Conn) -> int:
    """The counter every change to plans, thresholds and pauses raises (migrations/0011)."""
    return int(_rows(conn, CONFIGURATION_VERSION, ())[0]["version"])


def queue_length(conn: Conn) -> int:
    return int(_rows(conn, QUEUE_LENGTH, ())[0]["n"])


def anything_queued(conn: Conn) -> bool:
    return bool(_rows(conn, ANYTHING_QUEUED, ())[0]["queued"])


def try_lead(conn: Conn, key: int) -> bool:
    """Take the session advisory lock `key` if nobody holds it."""
    return bool(_rows(conn, TRY_LEAD, (key,))[0]["leading"])


def listen_evaluation(conn: Conn) -> None:
    conn.execute(LISTEN_EVALUATION)


def readings_in_windows(conn: Conn, windows: dict[UUID, tuple[datetime, datetime]]
                        ) -> list[dict[str, Any]]:
    """Readings of each citizen measured within that citizen's [since, until]."""
    ids = list(windows)
    return _rows(conn, READINGS_IN_WINDOWS, (ids, [windows[c][0] for c in ids],
                                             [windows[c][1] for c in ids]))


def events_in_windows(conn: Conn, windows: dict[UUID, tuple[datetime, datetime]]
                      ) -> list[dict[str, Any]]:
    """Events of each citizen measured within that citizen's [since, until]."""
    ids = list(windows)
    return _rows(conn, EVENTS_IN_WINDOWS, (ids, [windows[c][0] for c in ids],
                                           [windows[c][1] for c in ids]))


def devices_at(conn: Conn, citizens: Sequence[UUID], at: datetime,
               dead_since: datetime) -> list[dict[str, Any]]:
    return _rows(conn, DEVICES_AT, {"citizens": list(citizens), "at": at,
                                    "dead_since": dead_since})


def plans(conn: Conn, citizens: Sequence[UUID], at: datetime | None) -> list[dict[str, Any]]:
    return _rows(conn, PLANS, {"citizens": list(citizens), "at": at})


def thresholds(conn: Conn, citizens: Sequence[UUID], at: datetime | None
               ) -> list[dict[str, Any]]:
    """The versions in force at `at`, or every version when `at` is None."""
    if at is None:
        return _rows(conn, THRESHOLD_VERSIONS, {"citizens": list(citizens)})
    return _rows(conn, THRESHOLDS_AT, {"citizens": list(citizens), "at": at})


def pauses_overlapping(conn: Conn, citizens: Sequence[UUID], since: datetime,
                       until: datetime) -> list[dict[str, Any]]:
    return _rows(conn, PAUSES_OVERLAPPING, {"citizens": list(citizens), "since": since,
                                            "until": until})


def active_rules(conn: Conn, citizens: Sequence[UUID]) -> dict[UUID, set[str]]:
    """The rules of each citizen's alerts that are not resolved (only the leading engine opens
    alerts, so what this transaction reads cannot be opened under it)."""
    active: dict[UUID, set[str]] = {}
    for row in _rows(conn, ACTIVE_RULES, (list(citizens),)):
        active.setdefault(row["citizen_id"], set()).add(row["rule"])
    return active


def care_teams(conn: Conn, citizens: Sequence[UUID]) -> dict[UUID, UUID | None]:
    """Each citizen's care team (None when the citizen has none yet)."""
    return {row["id"]: row["care_team_id"] for row in _rows(conn, CARE_TEAMS, (list(citizens),))}


def citizens_with_plans(conn: Conn, at: datetime) -> list[UUID]:
    return [row["citizen_id"] for row in _rows(conn, CITIZENS_WITH_PLANS, {"at": at})]


# A citizen's items up to `upto` that could not be evaluated, moved out of the queue with the
# error. The columns named, not `*`: the two tables need not keep the same order.
PARK = """
WITH moved AS (DELETE FROM evaluation_queue WHERE citizen_id = %(citizen)s AND id <= %(upto)s
               RETURNING id, source, citizen_id, device_id, name, measured_at, seq, value, data,
                         quality, received_at, late, delay_cause, clock_suspect)
INSERT INTO evaluation_failures (id, source, citizen_id, device_id, name, measured_at, seq, value,
                                 data, quality, received_at, late, delay_cause, clock_suspect,
                                 failed_at, error)
SELECT id, source, citizen_id, device_id, name, measured_at, seq, value, data, quality,
       received_at, late, delay_cause, clock_suspect, %(now)s, %(error)s FROM moved
RETURNING id, source, device_id, name, measured_at, seq, late, delay_cause"""
PARKED_CITIZENS = """
SELECT DISTINCT citizen_id FROM evaluation_failures
 WHERE %(citizen)s::uuid IS NULL OR citizen_id = %(citizen)s ORDER BY citizen_id"""
LOCK_AGAINST_ERASURE = """
SELECT pg_advisory_xact_lock_shared(%(class)s, hashtext(citizen::text))
  FROM unnest(%(citizens)s::uuid[]) AS citizen"""
# Back in the queue in their order, but for a citizen discharged (or erased) meanwhile.
REQUEUE = """
WITH moved AS (DELETE FROM evaluation_failures f USING citizens c
                WHERE c.id = f.citizen_id AND c.discharged_at IS NULL
                  AND f.citizen_id = ANY(%(citizens)s)
               RETURNING f.id, f.source, f.citizen_id, f.device_id, f.name, f.measured_at,
                         f.seq, f.value, f.data, f.quality, f.received_at, f.late,
                         f.delay_cause, f.clock_suspect)
INSERT INTO evaluation_queue (source, citizen_id, device_id, name, measured_at, seq, value, data,
                              quality, received_at, late, delay_cause, clock_suspect)
SELECT source, citizen_id, device_id, name, measured_at, seq, value, data, quality, received_at,
       late, delay_cause, clock_suspect FROM moved ORDER BY id"""


def park(conn: Conn, citizen: UUID, upto: int, error: str, now: datetime) -> list[dict[str, Any]]:
    """Move the citizen's queued items up to id `upto` to evaluation_failures; what moved."""
    return _rows(conn, PARK, {"citizen": citizen, "upto": upto, "error": error, "now": now})


def requeue(conn: Conn, citizen: UUID | None = None) -> int:
    """Put parked items (of one citizen, or all) back in the queue, in their order; how many.
    Under each citizen's erasure lock (core/locks.py), so that an erasure under way is waited
    for and her items are not put back after it."""
    with conn.transaction():
        citizens = [row["citizen_id"] for row in _rows(conn, PARKED_CITIZENS,
                                                       {"citizen": citizen})]
        if not citizens:
            return 0
        _rows(conn, LOCK_AGAINST_ERASURE, {"class": locks.CITIZEN_ERASURE_CLASS,
                                           "citizens": citizens})
        with conn.cursor() as cur:
            cur.execute(REQUEUE, {"citizens": citizens})
            return cur.rowcount
