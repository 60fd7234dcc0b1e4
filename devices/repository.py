"""SQL of the registry and the readings time series. Functions take a connection and never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from devices.catalogue import DeviceKind
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
SELECT d.id, d.kind, p.citizen_id, lower(p.valid) AS valid_from, upper(p.valid) AS valid_to
  FROM devices d LEFT JOIN device_pairings p ON p.device_id = d.id
 WHERE d.id = ANY(%s)"""

CREATE_READING_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS reading_stage
    (LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"""
COPY_READING_STAGE = """
COPY reading_stage (device_id, metric, measured_at, citizen_id, value, seq, received_at, late)
FROM STDIN"""
INSERT_FROM_STAGE = """
INSERT INTO readings SELECT * FROM reading_stage ON CONFLICT DO NOTHING"""
INSERT_EVENT = """
INSERT INTO device_events (device_id, kind, measured_at, citizen_id, seq, received_at, late, data)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"""
TOUCH_LAST_SEEN = """
INSERT INTO device_status (device_id, online, last_seen_at, updated_at)
SELECT id, true, seen, seen FROM unnest(%s::text[], %s::timestamptz[]) AS t(id, seen)
ON CONFLICT (device_id) DO UPDATE
   SET last_seen_at = greatest(device_status.last_seen_at, excluded.last_seen_at),
       online = true, updated_at = excluded.updated_at"""
# A redelivered old status message must not overwrite a newer one.
UPSERT_STATUS = """
INSERT INTO device_status AS s (device_id, online, last_seen_at, battery_pct, signal_dbm,
                                firmware, status_reported_at, updated_at)
VALUES (%(device_id)s, %(online)s, %(seen)s, %(battery_pct)s, %(signal_dbm)s, %(firmware)s,
        %(reported_at)s, %(seen)s)
ON CONFLICT (device_id) DO UPDATE SET
    online = excluded.online,
    last_seen_at = CASE WHEN excluded.online
                        THEN greatest(s.last_seen_at, excluded.last_seen_at) ELSE s.last_seen_at END,
    battery_pct = coalesce(excluded.battery_pct, s.battery_pct),
    signal_dbm = coalesce(excluded.signal_dbm, s.signal_dbm),
    firmware = coalesce(excluded.firmware, s.firmware),
    status_reported_at = excluded.status_reported_at,
    updated_at = excluded.updated_at
WHERE s.status_reported_at IS NULL OR excluded.status_reported_at >= s.status_reported_at"""
ENSURE_PARTITIONS = "SELECT telecare_ensure_reading_partitions(%s, %s)"
STORAGE_BACKEND = "SELECT telecare_storage_backend()"

READINGS_RAW = """
SELECT measured_at, value, device_id, seq, received_at, late
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
 GROUP BY bucket_start
 ORDER BY bucket_start"""
DEVICES_WITH_STATUS = """
SELECT d.id, d.kind, d.model, d.serial, d.registered_at,
       p.citizen_id, s.online, s.last_seen_at, s.battery_pct, s.signal_dbm, s.firmware,
       s.status_reported_at
  FROM devices d
  LEFT JOIN device_pairings p ON p.device_id = d.id AND upper_inf(p.valid)
  LEFT JOIN device_status s ON s.device_id = d.id
 WHERE ({filter})
 ORDER BY d.id"""


def _scalar(conn: Conn, query: str, params: Sequence[Any] | None = None) -> Any:
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


def close_open_pairing(conn: Conn, device_id: str, at: datetime) -> None:
    conn.execute(CLOSE_OPEN_PAIRING, {"device_id": device_id, "at": at})


def insert_pairing(conn: Conn, pairing: Pairing) -> None:
    conn.execute(INSERT_PAIRING, (pairing.device_id, pairing.citizen_id, pairing.valid_from,
                                  pairing.valid_to))


def registered_devices(conn: Conn, device_ids: Iterable[str]) -> dict[str, RegisteredDevice]:
    """Each known device among `device_ids` with all its pairings, in one query."""
    kinds: dict[str, str] = {}
    pairings: dict[str, list[Pairing]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(REGISTERED_DEVICES, (list(device_ids),)):
            kinds[row["id"]] = row["kind"]
            if row["citizen_id"] is not None:
                pairings.setdefault(row["id"], []).append(Pairing(
                    device_id=row["id"], citizen_id=row["citizen_id"],
                    valid_from=row["valid_from"], valid_to=row["valid_to"]))
    return {
        device_id: RegisteredDevice(id=device_id, kind=DeviceKind(kind),
                                    pairings=tuple(pairings.get(device_id, ())))
        for device_id, kind in kinds.items()
    }


ReadingTuple = tuple[str, str, datetime, UUID, float, int, datetime, bool]


def prepare_reading_stage(conn: Conn) -> None:
    """Create the session's staging table for insert_readings. Call it outside a transaction
    (autocommit), once per connection: created inside one, a rollback would take it away."""
    conn.execute(CREATE_READING_STAGE)


def insert_readings(conn: Conn, rows: Sequence[ReadingTuple]) -> int:
    """COPY into the session's stage, then one idempotent insert; returns rows newly stored."""
    if not rows:
        return 0
    with conn.cursor() as cur:
        with cur.copy(COPY_READING_STAGE) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(INSERT_FROM_STAGE)
        return cur.rowcount


EventTuple = tuple[str, str, datetime, UUID, int, datetime, bool, dict[str, Any]]


def insert_events(conn: Conn, rows: Sequence[EventTuple]) -> None:
    if rows:
        with conn.cursor() as cur:
            cur.executemany(INSERT_EVENT, [(*row[:7], Jsonb(row[7])) for row in rows])


def touch_last_seen(conn: Conn, seen: dict[str, datetime]) -> None:
    if seen:
        conn.execute(TOUCH_LAST_SEEN, (list(seen), list(seen.values())))


def upsert_status(conn: Conn, status: dict[str, Any]) -> None:
    conn.execute(UPSERT_STATUS, status)


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
                      bucket: Any, origin: datetime) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(READINGS_BUCKETED, {
            "citizen_id": citizen_id, "metric": metric, "start": start, "end": end,
            "bucket": bucket, "origin": origin}).fetchall()


def devices_with_status(conn: Conn, *, citizen_id: UUID | None = None,
                        device_id: str | None = None) -> list[dict[str, Any]]:
    """Devices with their current holder and status: all, one citizen's, or one device."""
    conditions = [sql.SQL("true")]
    if citizen_id is not None:
        conditions.append(sql.SQL("p.citizen_id = %(citizen_id)s"))
    if device_id is not None:
        conditions.append(sql.SQL("d.id = %(device_id)s"))
    query = sql.SQL(DEVICES_WITH_STATUS).format(filter=sql.SQL(" AND ").join(conditions))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {"citizen_id": citizen_id, "device_id": device_id}).fetchall()
