"""SQL of the registry and the readings time series. Functions take a connection and never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from core import locks
from devices.models import Device, Pairing, RegisteredDevice

Conn = psycopg.Connection[Any]

INSERT_CITIZEN = """
INSERT INTO citizens (display_name, conditions) VALUES (%s, %s) RETURNING id"""
INSERT_DEVICE = """
INSERT INTO devices (id, kind, model, serial) VALUES (%s, %s, %s, %s)"""
DEVICE_EXISTS = "SELECT kind FROM devices WHERE id = %s"
CITIZEN_EXISTS = "SELECT 1 FROM citizens WHERE id = %s"
CLOSE_OPEN_PAIRING = """
UPDATE device_pairings SET valid = tstzrange(lower(valid), %(at)s, '[)')
 WHERE device_id = %(device_id)s AND upper_inf(valid) AND lower(valid) < %(at)s
RETURNING citizen_id"""
INSERT_PAIRING = """
INSERT INTO device_pairings (device_id, citizen_id, valid)
VALUES (%s, %s, tstzrange(%s, %s, '[)'))"""
REGISTERED_DEVICES = """
SELECT d.id, d.kind, p.citizen_id, lower(p.valid) AS valid_from, upper(p.valid) AS valid_to,
       coalesce(s.clock_suspect, false) AS clock_suspect, s.clock_offset_s
  FROM devices d
  LEFT JOIN device_pairings p ON p.device_id = d.id
  LEFT JOIN device_status s ON s.device_id = d.id
 WHERE d.id = ANY(%s)"""

# Ingest holds this shared for a batch, a pairing change holds it exclusively: a batch never
# attributes readings by pairings that a concurrent change is rewriting.
LOCK_PAIRINGS_SHARED = "SELECT pg_advisory_xact_lock_shared(%s)"
LOCK_PAIRINGS = "SELECT pg_advisory_xact_lock(%s)"

CREATE_READING_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS reading_stage
    (LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"""
COPY_READING_STAGE = """
COPY reading_stage (device_id, metric, measured_at, seq, citizen_id, value, received_at, sent_at,
                    late, delay_cause, quality, clock_suspect) FROM STDIN"""
# What the insert really stored (not a redelivery) joins the evaluation queue in the same
# statement: the alert engine evaluates each stored reading once (migrations/0006_alerts.sql).
INSERT_FROM_STAGE = """
WITH stored AS (
    INSERT INTO readings (device_id, metric, measured_at, seq, citizen_id, value, received_at,
                          sent_at, late, delay_cause, quality, clock_suspect)
    SELECT device_id, metric, measured_at, seq, citizen_id, value, received_at, sent_at,
           late, delay_cause, quality, clock_suspect
      FROM reading_stage
        ON CONFLICT DO NOTHING
    RETURNING device_id, metric, measured_at, seq, citizen_id, value, received_at, late,
              delay_cause, quality, clock_suspect)
INSERT INTO evaluation_queue (source, device_id, name, measured_at, seq, citizen_id, value,
                              received_at, late, delay_cause, quality, clock_suspect)
SELECT 'reading', * FROM stored"""
# Run only when the insert skipped rows: which staged readings the table now holds with the
# same value (a redelivery) and which with another (a different measurement under the same
# identity, refused).
STAGE_MATCHES_STORED = """
SELECT s.device_id, s.seq, s.value = r.value AS same
  FROM reading_stage s
  JOIN readings r USING (device_id, metric, measured_at, seq)"""
INSERT_EVENTS = """
WITH stored AS (
    INSERT INTO device_events (device_id, measured_at, seq, kind, citizen_id, received_at,
                               sent_at, late, delay_cause, clock_suspect, data)
    SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[], %s::text[], %s::uuid[],
                         %s::timestamptz[], %s::timestamptz[], %s::boolean[], %s::text[],
                         %s::boolean[], %s::jsonb[])
    ON CONFLICT DO NOTHING
    RETURNING device_id, measured_at, seq, kind, citizen_id, received_at, late, delay_cause,
              clock_suspect, data)
INSERT INTO evaluation_queue (source, device_id, measured_at, seq, name, citizen_id, received_at,
                              late, delay_cause, clock_suspect, data)
SELECT 'event', * FROM stored"""
# Compared in SQL: jsonb equality is by value (1e300 is 10^300), a Python round trip is not.
STORED_EVENTS = """
SELECT e.device_id, e.seq, e.kind = k.kind AND e.data = k.data AS same
  FROM device_events e
  JOIN unnest(%s::text[], %s::timestamptz[], %s::bigint[], %s::text[], %s::jsonb[])
       AS k(device_id, measured_at, seq, kind, data)
 USING (device_id, measured_at, seq)"""
# Seen devices are online again only when seen after the status that last set `online`
# (a last will in the same batch as a reading, received after it, keeps the device offline).
TOUCH_LAST_SEEN = """
INSERT INTO device_status AS s (device_id, online, last_seen_at, clock_offset_s, clock_suspect,
                                clock_checked_at, updated_at)
SELECT id, true, seen, offset_s, suspect, CASE WHEN offset_s IS NULL THEN NULL ELSE seen END, seen
  FROM unnest(%s::text[], %s::timestamptz[], %s::float8[], %s::boolean[])
       AS t(id, seen, offset_s, suspect)
ON CONFLICT (device_id) DO UPDATE
   SET last_seen_at = greatest(s.last_seen_at, excluded.last_seen_at),
       online = CASE WHEN s.status_received_at IS NULL
                       OR excluded.last_seen_at > s.status_received_at
                     THEN true ELSE s.online END,
       clock_offset_s = coalesce(excluded.clock_offset_s, s.clock_offset_s),
       clock_suspect = CASE WHEN excluded.clock_offset_s IS NULL THEN s.clock_suspect
                            ELSE excluded.clock_suspect END,
       clock_checked_at = coalesce(excluded.clock_checked_at, s.clock_checked_at),
       updated_at = greatest(s.updated_at, excluded.updated_at)"""
# Statuses are ordered by our receive time: the device's clock cannot freeze the row.
UPSERT_STATUS = """
INSERT INTO device_status AS s (device_id, online, status_received_at, last_seen_at, battery_pct,
                                signal_dbm, firmware, status_reported_at, updated_at)
VALUES (%(device_id)s, %(online)s, %(received_at)s,
        CASE WHEN %(online)s THEN %(received_at)s END, %(battery_pct)s, %(signal_dbm)s,
        %(firmware)s, %(reported_at)s, %(received_at)s)
ON CONFLICT (device_id) DO UPDATE SET
    online = excluded.online,
    status_received_at = excluded.status_received_at,
    last_seen_at = CASE WHEN excluded.online
                        THEN greatest(s.last_seen_at, excluded.last_seen_at) ELSE s.last_seen_at END,
    battery_pct = coalesce(excluded.battery_pct, s.battery_pct),
    signal_dbm = coalesce(excluded.signal_dbm, s.signal_dbm),
    firmware = coalesce(excluded.firmware, s.firmware),
    status_reported_at = coalesce(excluded.status_reported_at, s.status_reported_at),
    updated_at = greatest(s.updated_at, excluded.updated_at)
WHERE s.status_received_at IS NULL OR excluded.status_received_at >= s.status_received_at"""
REATTRIBUTE_READINGS = """
UPDATE readings SET citizen_id = %(to)s
 WHERE device_id = %(device_id)s AND measured_at >= %(since)s AND citizen_id = %(from)s"""
REATTRIBUTE_EVENTS = """
UPDATE device_events SET citizen_id = %(to)s
 WHERE device_id = %(device_id)s AND measured_at >= %(since)s AND citizen_id = %(from)s"""
RECORD_ATTRIBUTION_CHANGE = """
INSERT INTO attribution_changes (device_id, from_citizen, to_citizen, measured_from,
                                 readings_moved, events_moved, changed_at, changed_by)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"""
STORED_SINCE = """
SELECT EXISTS (SELECT 1 FROM readings WHERE device_id = %(device_id)s AND measured_at >= %(since)s)
    OR EXISTS (SELECT 1 FROM device_events
                WHERE device_id = %(device_id)s AND measured_at >= %(since)s)"""
ENSURE_PARTITIONS = "SELECT telecare_ensure_reading_partitions(%s, %s)"
STORAGE_BACKEND = "SELECT telecare_storage_backend()"

READINGS_RAW = """
SELECT measured_at, value, device_id, seq, received_at, late, delay_cause, quality,
       clock_suspect
  FROM readings
 WHERE citizen_id = %(citizen_id)s AND metric = %(metric)s
   AND measured_at >= %(start)s AND measured_at < %(end)s
 ORDER BY measured_at
 LIMIT %(limit)s"""
# date_bin works on plain and partitioned tables and on hypertables alike.
READINGS_BUCKETED = """
SELECT date_bin(%(bucket)s, measured_at, %(origin)s) AS bucket_start,
       min(value) AS min, avg(value) AS mean, max(value) AS max, count(*) AS count
  FROM readings
 WHERE citizen_id = %(citizen_id)s AND metric = %(metric)s
   AND measured_at >= %(start)s AND measured_at < %(end)s
   AND (quality = 'valid' OR %(include_implausible)s)
 GROUP BY bucket_start
 ORDER BY bucket_start"""
DEVICES_WITH_STATUS = """
SELECT d.id, d.kind, d.model, d.serial, d.registered_at,
       p.citizen_id, s.online, s.last_seen_at, s.battery_pct, s.signal_dbm, s.firmware,
       s.status_reported_at, s.clock_offset_s, s.clock_suspect
  FROM devices d
  LEFT JOIN device_pairings p ON p.device_id = d.id AND upper_inf(p.valid)
  LEFT JOIN device_status s ON s.device_id = d.id
 WHERE ({filter})
 ORDER BY d.id"""


def _scalar(conn: Conn, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
    """The first column of the first row, or None; whatever row factory the connection has."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(query, params).fetchone()
    return None if row is None else row[0]


def insert_citizen(conn: Conn, display_name: str, conditions: Sequence[str]) -> UUID:
    citizen_id: UUID = _scalar(conn, INSERT_CITIZEN, (display_name, list(conditions)))
    return citizen_id


def insert_device(conn: Conn, device: Device) -> None:
    conn.execute(INSERT_DEVICE, (device.id, device.kind.value, device.model, device.serial))


def device_kind(conn: Conn, device_id: str) -> str | None:
    kind: str | None = _scalar(conn, DEVICE_EXISTS, (device_id,))
    return kind


def citizen_exists(conn: Conn, citizen_id: UUID) -> bool:
    return _scalar(conn, CITIZEN_EXISTS, (citizen_id,)) is not None


def close_open_pairing(conn: Conn, device_id: str, at: datetime) -> UUID | None:
    """End the device's open pairing at `at`; returns whose it was, if there was one."""
    holder: UUID | None = _scalar(conn, CLOSE_OPEN_PAIRING, {"device_id": device_id, "at": at})
    return holder


def insert_pairing(conn: Conn, pairing: Pairing) -> None:
    conn.execute(INSERT_PAIRING, (pairing.device_id, pairing.citizen_id, pairing.valid_from,
                                  pairing.valid_to))


def lock_pairings_shared(conn: Conn) -> None:
    """Hold off pairing changes until this transaction ends (ingest, per batch)."""
    conn.execute(LOCK_PAIRINGS_SHARED, (locks.PAIRINGS,))


def lock_pairings(conn: Conn) -> None:
    """Wait for batches in flight and hold off new ones until this transaction ends."""
    conn.execute(LOCK_PAIRINGS, (locks.PAIRINGS,))


def registered_devices(conn: Conn, device_ids: Iterable[str]) -> dict[str, RegisteredDevice]:
    """Each known device among `device_ids` with all its pairings, in one query."""
    kinds: dict[str, str] = {}
    clocks: dict[str, tuple[bool, float | None]] = {}
    pairings: dict[str, list[Pairing]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(REGISTERED_DEVICES, (list(device_ids),)):
            kinds[row["id"]] = row["kind"]
            clocks[row["id"]] = (row["clock_suspect"], row["clock_offset_s"])
            if row["citizen_id"] is not None:
                pairings.setdefault(row["id"], []).append(Pairing(
                    device_id=row["id"], citizen_id=row["citizen_id"],
                    valid_from=row["valid_from"], valid_to=row["valid_to"]))
    return {
        device_id: RegisteredDevice(id=device_id, kind=kind,
                                    pairings=tuple(pairings.get(device_id, ())),
                                    clock_suspect=clocks[device_id][0],
                                    clock_offset_s=clocks[device_id][1])
        for device_id, kind in kinds.items()
    }


class ReadingRow(NamedTuple):
    device_id: str
    metric: str
    measured_at: datetime
    seq: int
    citizen_id: UUID
    value: float
    received_at: datetime
    sent_at: datetime | None
    late: bool
    delay_cause: str | None
    quality: str
    clock_suspect: bool


class EventRow(NamedTuple):
    device_id: str
    measured_at: datetime
    seq: int
    kind: str
    citizen_id: UUID
    received_at: datetime
    sent_at: datetime | None
    late: bool
    delay_cause: str | None
    clock_suspect: bool
    data: dict[str, Any]


# (device_id, seq) of items the database refused as differing from what it holds.
Conflicts = set[tuple[str, int]]


def prepare_reading_stage(conn: Conn) -> None:
    """Create the session's staging table for insert_readings. Call it outside a transaction
    (autocommit), once per connection: created inside one, a rollback would take it away."""
    conn.execute(CREATE_READING_STAGE)


def insert_readings(conn: Conn, rows: Sequence[ReadingRow]) -> tuple[int, Conflicts]:
    """COPY into the session's stage, then one idempotent insert. Returns how many rows were
    new, and the readings whose identity the table already holds with a different value.
    `rows` must not repeat an identity (the caller resolves repeats within a batch)."""
    if not rows:
        return 0, set()
    with conn.cursor(row_factory=tuple_row) as cur:
        with cur.copy(COPY_READING_STAGE) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(INSERT_FROM_STAGE)
        inserted = cur.rowcount
        if inserted == len(rows):
            return inserted, set()
        conflicts = {(device_id, seq) for device_id, seq, same in cur.execute(STAGE_MATCHES_STORED)
                     if not same}
    return inserted, conflicts


def insert_events(conn: Conn, rows: Sequence[EventRow]) -> Conflicts:
    """Insert events idempotently; returns those whose identity is held with other content."""
    if not rows:
        return set()
    columns = list(zip(*rows, strict=True))
    columns[-1] = tuple(Jsonb(data) for data in columns[-1])
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(INSERT_EVENTS, [list(column) for column in columns])
        if cur.rowcount == len(rows):
            return set()
        held = cur.execute(STORED_EVENTS, [list(columns[i]) for i in (0, 1, 2, 3, 10)])
        return {(device_id, seq) for device_id, seq, same in held if not same}


class Sighting(NamedTuple):
    """A device heard from: when, and its clock as its messages showed it (None: not checked)."""

    seen_at: datetime
    clock_offset_s: float | None = None
    clock_suspect: bool = False


def touch_last_seen(conn: Conn, seen: dict[str, Sighting]) -> None:
    if seen:
        conn.execute(TOUCH_LAST_SEEN, (list(seen), [s.seen_at for s in seen.values()],
                                       [s.clock_offset_s for s in seen.values()],
                                       [s.clock_suspect for s in seen.values()]))


def upsert_status(conn: Conn, status: dict[str, Any]) -> None:
    conn.execute(UPSERT_STATUS, status)


def stored_since(conn: Conn, device_id: str, since: datetime) -> bool:
    """Whether readings or events of the device measured at or after `since` are stored."""
    return bool(_scalar(conn, STORED_SINCE, {"device_id": device_id, "since": since}))


def reattribute(conn: Conn, device_id: str, from_citizen: UUID, to_citizen: UUID,
                since: datetime) -> tuple[int, int]:
    """Move the device's readings and events measured since `since` from one citizen to
    another; returns (readings, events) moved."""
    params = {"device_id": device_id, "from": from_citizen, "to": to_citizen, "since": since}
    with conn.cursor() as cur:
        cur.execute(REATTRIBUTE_READINGS, params)
        readings = cur.rowcount
        cur.execute(REATTRIBUTE_EVENTS, params)
        return readings, cur.rowcount


def record_attribution_change(conn: Conn, device_id: str, from_citizen: UUID,
                              to_citizen: UUID, since: datetime, moved: tuple[int, int],
                              changed_at: datetime, changed_by: str) -> None:
    conn.execute(RECORD_ATTRIBUTION_CHANGE, (device_id, from_citizen, to_citizen, since,
                                             moved[0], moved[1], changed_at, changed_by))


def ensure_partitions(conn: Conn, start: datetime, end: datetime) -> int:
    return int(_scalar(conn, ENSURE_PARTITIONS, (start, end)))


def storage_backend(conn: Conn) -> str:
    return str(_scalar(conn, STORAGE_BACKEND))


def readings_raw(conn: Conn, citizen_id: UUID, metric: str, start: datetime, end: datetime,
                 limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(READINGS_RAW, {"citizen_id": citizen_id, "metric": metric,
                                          "start": start, "end": end, "limit": limit}).fetchall()


def readings_bucketed(conn: Conn, citizen_id: UUID, metric: str, start: datetime, end: datetime,
                      bucket: Any, origin: datetime, *,
                      include_implausible: bool = False) -> list[dict[str, Any]]:
    """min/mean/max/count per bucket; readings marked implausible count only when asked."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(READINGS_BUCKETED, {
            "citizen_id": citizen_id, "metric": metric, "start": start, "end": end,
            "bucket": bucket, "origin": origin,
            "include_implausible": include_implausible}).fetchall()


def devices_with_status(conn: Conn, *, citizen_id: UUID | None = None,
                        device_id: str | None = None,
                        within: tuple[sql.Composable, dict[str, Any]] | None = None
                        ) -> list[dict[str, Any]]:
    """Devices with their current holder and status: all, one citizen's, or one device; with
    `within` (a subquery of citizen_id and its parameters), only those held by its citizens."""
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"citizen_id": citizen_id, "device_id": device_id}
    if within is not None:
        conditions.append(sql.SQL("p.citizen_id IN (SELECT v.citizen_id FROM ({}) v)").format(
            within[0]))
        params.update(within[1])
    if citizen_id is not None:
        conditions.append(sql.SQL("p.citizen_id = %(citizen_id)s"))
    if device_id is not None:
        conditions.append(sql.SQL("d.id = %(device_id)s"))
    query = sql.SQL(DEVICES_WITH_STATUS).format(filter=sql.SQL(" AND ").join(conditions))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()
