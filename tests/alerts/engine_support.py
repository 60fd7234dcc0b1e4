"""Helpers of the engine, replay and exactly-once tests: citizens on a team with a plan,
readings stored through the real ingest insert (which fills the evaluation queue), and an
alert engine running in a thread."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.conninfo import make_conninfo

from alerts.engine import AlertEngine
from core.roles import process_dsn
from devices import repository as devices_repo
from devices.repository import EventRow, ReadingRow
from tests.conftest import PAIRED_SINCE, new_device, running_in_thread

Conn = psycopg.Connection[Any]
BP = ("systolic_bp", "diastolic_bp", "pulse_rate")


def care_team(conn: Conn) -> UUID:
    row = conn.execute("INSERT INTO care_teams (name) VALUES (%s) RETURNING id",
                       (f"team-{uuid.uuid4().hex[:8]}",)).fetchone()
    assert row is not None
    return UUID(str(row[0]))


def enrolled(conn: Conn, plan: str = "hypertension", kind: str = "bp_monitor",
             team: UUID | None = None) -> tuple[str, UUID]:
    """A device paired to a new citizen on a care team who follows `plan` since 2020."""
    device_id, citizen = new_device(conn, kind)
    conn.execute("UPDATE citizens SET care_team_id = %s WHERE id = %s",
                 (team or care_team(conn), citizen))
    conn.execute("INSERT INTO citizen_plans (citizen_id, plan, valid, set_by, set_at) "
                 "VALUES (%s, %s, tstzrange(%s, NULL), 'test', %s)",
                 (citizen, plan, PAIRED_SINCE, PAIRED_SINCE))
    return device_id, citizen


def bp_rows(device_id: str, citizen: UUID, at: datetime, seq: int, systolic: float,
            diastolic: float = 80.0, pulse: float = 70.0, *, received_at: datetime | None = None,
            late: bool = False, delay_cause: str | None = None) -> list[ReadingRow]:
    received = received_at or at
    return [ReadingRow(device_id, metric, at, seq, citizen, value, received, None, late,
                       delay_cause, "valid", False)
            for metric, value in zip(BP, (systolic, diastolic, pulse), strict=True)]


def store(conn: Conn, rows: list[ReadingRow], events: list[EventRow] | None = None) -> None:
    """Store through the ingest insert (one transaction), which queues what it stored."""
    devices_repo.prepare_reading_stage(conn)
    with conn.transaction():
        devices_repo.insert_readings(conn, rows)
        if events:
            devices_repo.insert_events(conn, events)


def button(device_id: str, citizen: UUID, at: datetime, seq: int) -> EventRow:
    return EventRow(device_id, at, seq, "emergency_button", citizen, at, None, False, None,
                    False, {})


def scalar(conn: Conn, query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def named(dsn: str, name: str) -> str:
    """The DSN with an application_name, to find (and terminate) the engine's backend."""
    return make_conninfo(dsn, application_name=name)


class FakeClock:
    """A clock the test moves."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@contextmanager
def running_engine(dsn: str, clock: Callable[[], datetime], tick_s: float = 3600.0,
                   **options: Any) -> Iterator[AlertEngine]:
    """An alert engine in a thread, under the alert process's database role (core/roles.py);
    afterwards stopped (bounded) and checked for errors."""
    engine = AlertEngine(process_dsn(dsn, "alerts"), clock, tick_s, **options)
    with running_in_thread(engine.run, "alert engine", 15):
        yield engine
