"""Telecare's own maintenance on both backends: old chunks compressed (TimescaleDB), partitions
made ahead (PostgreSQL), every outcome recorded, one run at a time. Each test has a database
of its own: compressing the session's chunks would change what other tests write into."""

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from devices.dead_letters import DeadLetter, insert_dead_letters
from devices.maintenance import (
    COMPRESS_AFTER,
    JOBS,
    Job,
    maintenance_status,
    run_maintenance,
    standard_jobs,
)
from tests.conftest import count, only_on

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
# The columns every version of the readings table has (the rest have defaults).
INSERT_READING = """
INSERT INTO readings (device_id, metric, measured_at, citizen_id, value, seq, received_at, late)
VALUES (%s, 'body_weight', %s, %s, %s, %s, %s, false)"""


@pytest.fixture
def db(fresh_database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        yield conn


def _run(conn: psycopg.Connection[Any], now: datetime = NOW,
         jobs: tuple[Job, ...] = JOBS) -> dict[str, tuple[int, str | None]]:
    with conn.transaction():
        outcomes = run_maintenance(conn, now, jobs)
    assert outcomes is not None
    return {o.job: (o.done, o.error_class) for o in outcomes}


def _insert(conn: psycopg.Connection[Any], start: datetime, n: int) -> None:
    device, citizen = f"scal-{uuid.uuid4().hex[:8]}", uuid.uuid4()
    with conn.cursor() as cur:
        cur.executemany(INSERT_READING, [(device, start + timedelta(minutes=i), citizen,
                                          70.0 + i, i, start + timedelta(minutes=i))
                                         for i in range(n)])


def _chunks(conn: psycopg.Connection[Any]) -> list[tuple[datetime, bool]]:
    return [(end, compressed) for end, compressed in conn.execute(
        "SELECT range_end, is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings' ORDER BY range_end")]


@only_on("timescaledb")
def test_readings_chunks_older_than_the_compression_age_are_compressed_and_still_read(
        db: psycopg.Connection[Any]) -> None:
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=1)
    _insert(db, old, 60)
    _insert(db, recent, 10)
    assert [compressed for _end, compressed in _chunks(db)] == [False, False]

    assert _run(db) == {"compress_readings": (1, None)}

    assert [(end <= NOW - COMPRESS_AFTER, compressed) for end, compressed in _chunks(db)] == [
        (True, True), (False, False)]
    assert db.execute("SELECT count(*), sum(value), min(measured_at) FROM readings "
                      "WHERE measured_at < %s", (NOW - COMPRESS_AFTER,)).fetchone() == (
        60, sum(70.0 + i for i in range(60)), old)
    assert count(db, "SELECT count(*) FROM readings") == 70
    assert _run(db) == {"compress_readings": (0, None)}  # nothing left to compress


@only_on("timescaledb")
def test_a_late_reading_in_a_compressed_chunk_is_stored_and_read(
        db: psycopg.Connection[Any]) -> None:
    old = NOW - timedelta(days=40)
    _insert(db, old, 5)
    _run(db)
    _insert(db, old + timedelta(hours=1), 1)  # a device's backlog, weeks late
    assert _run(db) == {"compress_readings": (0, None)}  # recompressed, not newly compressed
    assert count(db, "SELECT count(*) FROM readings WHERE measured_at < %s",
                 NOW - COMPRESS_AFTER) == 6


@only_on("postgres")
def test_plain_postgres_gets_its_monthly_partitions_ahead(db: psycopg.Connection[Any]) -> None:
    months = ["2030_05", "2030_06", "2030_07", "2030_08", "2030_09"]

    def existing() -> list[str]:
        return [m for m in months if db.execute("SELECT to_regclass(%s)",
                                                (f"readings_{m}",)).fetchone() != (None,)]

    assert existing() == []
    assert _run(db) == {"reading_partitions": (5, None)}
    assert existing() == months
    _insert(db, datetime(2030, 7, 1, tzinfo=UTC), 1)
    assert db.execute("SELECT tableoid::regclass::text FROM readings").fetchone() == (
        "readings_2030_07",)
    assert _run(db) == {"reading_partitions": (0, None)}


def test_dead_letters_past_their_retention_are_purged(db: psycopg.Connection[Any]) -> None:
    def letter(received_at: datetime) -> DeadLetter:
        payload = received_at.isoformat().encode()
        return DeadLetter(received_at, "telecare/v1/x/readings", None, "malformed_json", "",
                          payload, len(payload), hashlib.sha256(payload).digest())

    insert_dead_letters(db, [letter(NOW - timedelta(days=31)), letter(NOW - timedelta(days=29))])
    outcomes = _run(db, jobs=standard_jobs(timedelta(days=30)))
    assert outcomes["dead_letter_retention"] == (1, None)
    assert db.execute("SELECT received_at FROM dead_letters").fetchall() == [
        (NOW - timedelta(days=29),)]
    assert [s.unit for s in maintenance_status(db) if s.job == "dead_letter_retention"] == [
        "dead letters"]


def _divide_by_zero(conn: psycopg.Connection[Any], now: datetime) -> int:
    conn.execute("CREATE TABLE half_done (x int)")  # undone with the failing job
    conn.execute("SELECT 1 / 0")
    return 1


def _fine(conn: psycopg.Connection[Any], now: datetime) -> int:
    return 3


def test_a_failing_job_is_recorded_and_the_others_still_run(
        db: psycopg.Connection[Any]) -> None:
    failing = Job("flaky", "rows", _divide_by_zero)
    outcomes = _run(db, jobs=(failing, *JOBS))
    assert outcomes.pop("flaky") == (0, "DivisionByZero")
    assert [error for _done, error in outcomes.values()] == [None]  # the backend's own job
    assert db.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
    _run(db, NOW + timedelta(hours=1), jobs=(failing,))

    status = {s.job: s for s in maintenance_status(db)}
    flaky = status["flaky"]
    assert (flaky.failing, flaky.failures, flaky.last_error_class, flaky.last_error_sqlstate,
            flaky.last_run_at, flaky.last_success_at) == (
        True, 2, "DivisionByZero", "22012", NOW + timedelta(hours=1), None)
    assert flaky.overdue(NOW, timedelta(days=1))
    assert [s.failing for job, s in status.items() if job != "flaky"] == [False]

    _run(db, NOW + timedelta(hours=2), jobs=(Job("flaky", "rows", _fine),))
    recovered = next(s for s in maintenance_status(db) if s.job == "flaky")
    assert (recovered.failing, recovered.last_success_at, recovered.last_done,
            recovered.last_error_class) == (False, NOW + timedelta(hours=2), 3, "DivisionByZero")
    assert not recovered.overdue(NOW + timedelta(hours=3), timedelta(days=1))


def test_a_job_that_raises_outside_sql_is_recorded_too(db: psycopg.Connection[Any]) -> None:
    def broken(conn: psycopg.Connection[Any], now: datetime) -> int:
        raise KeyError("a bug in the job")

    assert _run(db, jobs=(Job("buggy", "rows", broken),)) == {"buggy": (0, "KeyError")}
    assert [(s.job, s.failing, s.last_error_sqlstate) for s in maintenance_status(db)] == [
        ("buggy", True, None)]


def test_only_one_session_runs_maintenance_at_a_time(fresh_database: str,
                                                     db: psycopg.Connection[Any]) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as other, db.transaction():
        other.execute("SET lock_timeout = '5s'")  # without the lock this fails, not hangs
        assert run_maintenance(db, NOW) is not None
        with other.transaction():
            assert run_maintenance(other, NOW) is None  # the first still holds the lock
    with db.transaction():
        assert run_maintenance(db, NOW) is not None  # released at commit


def test_maintenance_outside_a_transaction_is_refused(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(ValueError, match="transaction"):
        run_maintenance(db, NOW)
