"""Personal baselines in the live engine, on the real database: retrained on the tick, visible as
stored rows, and a citizen in her learning period raises no anomaly alert while one past it does."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import psycopg

from alerts import baseline_repository
from alerts.engine import AlertEngine
from alerts.retraining import retrain
from anomaly.baseline import BaselineConfig
from core.db import use_utc
from core.roles import process_dsn
from tests.alerts.engine_support import FakeClock, bp_rows, enrolled, scalar, store

Conn = psycopg.Connection[Any]


def history(conn: Conn, device: str, citizen: Any, days: int, now: datetime) -> None:
    """Twice a day, systolic about 130 (in band), diastolic about 80, pulse about 70."""
    noise = random.Random(days)
    rows = []
    for i in range(days * 2):
        at = now - timedelta(hours=12 * (days * 2 - i))
        rows += bp_rows(device, citizen, at, i, round(noise.gauss(130, 3)),
                        round(noise.gauss(80, 2)), round(noise.gauss(70, 3)))
    store(conn, rows)


def engine_conn(db: str) -> Conn:
    conn = psycopg.connect(process_dsn(db, "alerts"), autocommit=True)
    use_utc(conn)
    return conn


def anomaly_alerts(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT rule, severity, explanation FROM alerts WHERE rule LIKE 'anomaly:%'"
                        " ORDER BY rule").fetchall()


def run(db: str, dbconn: Conn, days: int) -> tuple[AlertEngine, Conn, FakeClock, Any, str]:
    clock = FakeClock()
    device, citizen = enrolled(dbconn, "hypertension", "bp_monitor")
    history(dbconn, device, citizen, days, clock.now)
    engine = AlertEngine(process_dsn(db, "alerts"), clock)
    conn = engine_conn(db)
    while engine.drain_once(conn):
        pass
    assert engine.retrain_once(conn, clock.now) == 1
    clock.advance(3600)
    # 152 mmHg is inside the hypertension plan's bands (yellow above 159), far above her usual.
    store(dbconn, bp_rows(device, citizen, clock.now, 10_000, 152, 80, 70))
    engine.drain_once(conn)
    return engine, conn, clock, citizen, device


def test_a_citizen_in_her_learning_period_raises_no_anomaly_alert(db: str, dbconn: Conn) -> None:
    _, conn, _, citizen, _ = run(db, dbconn, days=10)
    with conn:
        assert anomaly_alerts(dbconn) == []
        states = dbconn.execute("SELECT series, state IS NULL, rows, learning_until > trained_at"
                                " FROM anomaly_baselines WHERE citizen_id = %s ORDER BY series",
                                (citizen,)).fetchall()
    assert states == [("diastolic_bp", True, 20, True), ("pulse_rate", True, 20, True),
                      ("systolic_bp", True, 20, True)]


def test_past_her_learning_period_an_in_band_reading_rare_for_her_raises_one(db: str,
                                                                           dbconn: Conn) -> None:
    _, conn, _, citizen, _ = run(db, dbconn, days=30)
    with conn:
        found = anomaly_alerts(dbconn)
    assert [(rule, severity) for rule, severity, _ in found] == [("anomaly:systolic_bp", "yellow")]
    assert 127 <= found[0][2]["usual"] <= 133
    assert scalar(dbconn, "SELECT count(*) FROM alerts WHERE rule LIKE 'threshold:%%'") == 0
    assert scalar(dbconn, "SELECT count(*) FROM anomaly_baselines WHERE citizen_id = %s"
                  " AND state IS NOT NULL", citizen) == 3


def test_the_tick_retrains_only_what_is_due(db: str, dbconn: Conn) -> None:
    engine, conn, clock, citizen, _ = run(db, dbconn, days=30)
    with conn:
        assert engine.retrain_once(conn, clock.now) == 0  # trained an hour ago
        clock.advance(25 * 3600)
        engine.tick_once(conn)
        assert engine.counters.retrained == 2  # the run's, and the tick's a day later
        assert scalar(dbconn, "SELECT min(trained_at) FROM anomaly_baselines WHERE citizen_id = %s",
                      citizen) == clock.now


def test_a_baseline_stored_and_loaded_scores_as_the_one_trained(db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn, "hypertension", "bp_monitor")
    history(dbconn, device, citizen, 30, clock.now)
    dbconn.execute("DELETE FROM evaluation_queue")  # as if evaluated: retraining learns those
    with engine_conn(db) as conn:
        trained = retrain(conn, [citizen], clock.now, BaselineConfig())[citizen]
        loaded = baseline_repository.load(conn, [citizen])[citizen]
    assert set(loaded) == set(trained) == {"diastolic_bp", "pulse_rate", "systolic_bp"}
    assert {b.status for b in loaded.values()} == {"active"}
    later = clock.now + timedelta(hours=5)
    since = [(clock.now + timedelta(hours=h), 131.0 + h) for h in range(1, 4)]
    for series, baseline in trained.items():
        assert loaded[series] == baseline
        for value in (60.0, 80.0, 130.0, 152.0, 190.0):
            assert loaded[series].score(later, value, since) == baseline.score(later, value, since)


def test_a_reading_still_queued_is_not_learnt_before_it_is_evaluated(db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn, "hypertension", "bp_monitor")
    history(dbconn, device, citizen, 30, clock.now - timedelta(hours=2))
    dbconn.execute("DELETE FROM evaluation_queue")
    queued_at = clock.now - timedelta(hours=1)
    store(dbconn, bp_rows(device, citizen, queued_at, 10_000, 175, 80, 70))
    with engine_conn(db) as conn:
        trained = retrain(conn, [citizen], clock.now, BaselineConfig())[citizen]
    systolic = trained["systolic_bp"]
    assert systolic.trained_through is not None and systolic.trained_through < queued_at
    assert systolic.rows == 60
