"""The alert engine on the real database: queued items are evaluated once and leave the queue
in the transaction that records their alerts; contexts load in a fixed number of queries; a
defect or a lost connection loses nothing; one engine leads and a standby takes over; the
tick escalates; a stored reading's alert commits well under 100 ms after it."""

from __future__ import annotations

import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import alerts.engine as engine_module
from alerts import context_repository
from alerts.context import load_contexts
from alerts.engine import AlertEngine
from core.clock import system_clock
from tests.alerts.engine_support import (
    FakeClock,
    bp_rows,
    button,
    enrolled,
    named,
    running_engine,
    scalar,
    store,
)
from tests.conftest import wait_for

Conn = psycopg.Connection[Any]


def _alerts(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT citizen_id, rule, severity, count FROM alerts "
                        "ORDER BY citizen_id, rule").fetchall()


def test_queued_items_are_evaluated_once_and_leave_the_queue_with_their_alerts(
        db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)

    def measure(seq: int) -> None:
        # Both parts red: one measurement must still be one finding.
        store(dbconn, bp_rows(device, citizen, clock.now, seq, systolic=200, diastolic=115))
        clock.advance(60)

    measure(1)
    engine = AlertEngine(db, clock, batch_max=4)
    with psycopg.connect(db, autocommit=True) as work:
        assert engine.drain_once(work) == 3  # her history is now in the engine's cache
        for seq in range(2, 5):
            measure(seq)
        assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 9
        taken = [engine.drain_once(work) for _ in range(3)]
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 0
    rows = _alerts(dbconn)
    assert (citizen, "threshold:blood_pressure", "red", 4) in rows
    # One finding per measurement: each evaluated once.
    assert scalar(dbconn, "SELECT count(*) FROM alert_findings WHERE rule = "
                  "'threshold:blood_pressure'") == 4
    # Four rows wanted, the third message's other two parts taken with its first.
    assert taken == [6, 3, 0]


def test_in_band_readings_leave_the_queue_and_raise_nothing(db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=125))
    with psycopg.connect(db, autocommit=True) as work:
        assert AlertEngine(db, clock).drain_once(work) == 3
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 0
    assert _alerts(dbconn) == []


def test_a_press_behind_a_backlog_of_readings_is_evaluated_in_the_first_batch(
        db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    for seq in range(1, 11):
        store(dbconn, bp_rows(device, citizen, clock.now, seq, systolic=125))
    store(dbconn, [], [button(device, citizen, clock.now, 11)])
    engine = AlertEngine(db, clock, batch_max=4)
    with psycopg.connect(db, autocommit=True) as work:
        assert engine.drain_once(work) == 4
    assert _alerts(dbconn) == [(citizen, "emergency_button", "red", 1)]
    # The rest of the batch was the oldest readings: the backlog keeps its order.
    assert scalar(dbconn, "SELECT min(seq) FROM evaluation_queue") == 2


def test_triage_takes_an_urgent_citizen_ahead_of_the_backlog_with_its_earlier_items(
        db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    backlog_device, backlog_citizen = enrolled(dbconn)
    for seq in range(1, 11):
        store(dbconn, bp_rows(backlog_device, backlog_citizen, clock.now, seq, systolic=125))
    device, citizen = enrolled(dbconn)
    store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=125))
    store(dbconn, bp_rows(device, citizen, clock.now + timedelta(minutes=1), 2, systolic=200))
    engine = AlertEngine(db, clock)
    with psycopg.connect(db, autocommit=True) as work:
        # Both of the citizen's readings (three metrics each), the in-band one first.
        assert engine.triage_once(work) == 6
        assert engine.triage_once(work) == 0  # nothing new queued since it looked
    assert _alerts(dbconn) == [(citizen, "threshold:blood_pressure", "red", 1)]
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue WHERE citizen_id = %s",
                  backlog_citizen) == 30
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue WHERE citizen_id = %s",
                  citizen) == 0


def test_triage_takes_at_most_a_batch_of_citizens_and_looks_again_at_the_rest(
        db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    urgent = []
    for seq in range(3):
        device, citizen = enrolled(dbconn)
        store(dbconn, bp_rows(device, citizen, clock.now, seq + 1, systolic=200))
        urgent.append(citizen)
    engine = AlertEngine(db, clock, batch_citizens=2)
    with psycopg.connect(db, autocommit=True) as work:
        assert engine.triage_once(work) == 6  # two citizens, three metrics each
        assert engine.triage_once(work) == 3  # the third, looked at again
        assert engine.triage_once(work) == 0
    assert sorted(row[0] for row in _alerts(dbconn)) == sorted(urgent)


def test_a_drain_that_is_not_behind_takes_the_urgent_item_in_its_one_batch_without_triage(
        db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    engine = AlertEngine(db, clock)
    with psycopg.connect(db, autocommit=True) as work:
        assert engine.drain_once(work) == 0  # an empty queue: not behind
        in_band_device, in_band_citizen = enrolled(dbconn)
        store(dbconn, bp_rows(in_band_device, in_band_citizen, clock.now, 1, systolic=125))
        device, citizen = enrolled(dbconn)
        store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=200))
        assert engine._drain(work, threading.Event()) is True
    assert (engine.counters.triaged, engine.counters.batches) == (0, 1)
    assert _alerts(dbconn) == [(citizen, "threshold:blood_pressure", "red", 1)]
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 0


def test_behind_a_full_batch_triage_takes_the_urgent_citizen_next(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(engine_module, "DRAIN_BUDGET_S", 0.0)  # one pass of the loop
    engine = AlertEngine(db, clock, batch_citizens=1)
    backlog = [enrolled(dbconn) for _ in range(3)]
    for device, citizen in backlog:
        store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=125))
    device, citizen = enrolled(dbconn)
    store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=200))
    with psycopg.connect(db, autocommit=True) as work:
        assert engine.drain_once(work) == 3  # one citizen: a full batch, so behind
        # Triage takes the urgent citizen ahead of the two left, then one batch.
        assert engine._drain(work, threading.Event()) is False
    assert engine.counters.triaged == 3
    assert _alerts(dbconn) == [(citizen, "threshold:blood_pressure", "red", 1)]
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 3


def test_a_batch_that_was_not_full_but_left_items_queued_counts_as_behind(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch's citizens are chosen among the oldest rows (OLDEST_LOOK per citizen wanted): a
    # citizen's bulk upload fills them, and the batch is not full although more is queued.
    monkeypatch.setattr(context_repository, "OLDEST_LOOK", 2)
    clock = FakeClock()
    engine = AlertEngine(db, clock, batch_citizens=2)
    bulk_device, bulk_citizen = enrolled(dbconn)
    for seq in range(1, 4):  # nine rows, more than the four looked at
        store(dbconn, bp_rows(bulk_device, bulk_citizen, clock.now, seq, systolic=125))
    device, citizen = enrolled(dbconn)
    store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=200))
    with psycopg.connect(db, autocommit=True) as work:
        assert engine.drain_once(work) == 9  # the bulk citizen alone: not full
        assert engine._behind
        assert engine._drain(work, threading.Event()) is True
    assert _alerts(dbconn) == [(citizen, "threshold:blood_pressure", "red", 1)]
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 0


def test_a_drain_gives_way_to_the_tick_when_the_queue_does_not_empty(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    for seq in range(3):
        device, citizen = enrolled(dbconn)
        store(dbconn, bp_rows(device, citizen, clock.now, seq + 1, systolic=125))
    monkeypatch.setattr(engine_module, "DRAIN_BUDGET_S", 0.0)
    engine = AlertEngine(db, clock, batch_citizens=1)
    with psycopg.connect(db, autocommit=True) as work:
        assert engine._drain(work, threading.Event()) is False  # one batch, then the tick
        assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 6
        monkeypatch.setattr(engine_module, "DRAIN_BUDGET_S", 10.0)
        assert engine._drain(work, threading.Event()) is True
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 0


def test_a_threshold_set_between_batches_is_applied_to_the_next_batch(
        db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)  # hypertension: systolic in band up to 159
    engine = AlertEngine(db, clock)
    with psycopg.connect(db, autocommit=True) as work:
        store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=150))
        assert engine.drain_once(work) == 3  # the engine now holds the plan's defaults
        assert _alerts(dbconn) == []
        dbconn.execute("INSERT INTO thresholds (citizen_id, metric, version, warning_high, "
                       "alert_high, valid_from, set_by, set_at) VALUES (%s, 'systolic_bp', 1, "
                       "140, 145, %s, 'nurse', %s)", (citizen, clock.now, clock.now))
        clock.advance(60)
        store(dbconn, bp_rows(device, citizen, clock.now, 2, systolic=150))
        assert engine.drain_once(work) == 3
    assert _alerts(dbconn) == [(citizen, "threshold:blood_pressure", "red", 1)]
    assert scalar(dbconn, "SELECT threshold_version FROM alerts WHERE citizen_id = %s",
                  citizen) == 1


class CountingCursor(psycopg.Cursor[Any]):
    executed: list[str] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        CountingCursor.executed.append(str(query)[:40])
        return super().execute(query, params, **kwargs)


@pytest.mark.parametrize("citizens", [1, 40])
def test_contexts_load_in_seven_queries_whatever_the_number_of_citizens(
        db: str, dbconn: Conn, citizens: int) -> None:
    clock = FakeClock()
    enrolled_ids = []
    for _ in range(citizens):
        device, citizen = enrolled(dbconn)
        store(dbconn, bp_rows(device, citizen, clock.now - timedelta(hours=2), 1, 130))
        enrolled_ids.append(citizen)
    with psycopg.Connection.connect(db, autocommit=True,
                                    cursor_factory=CountingCursor) as counted:
        CountingCursor.executed.clear()
        contexts = load_contexts(counted, enrolled_ids, clock.now)
        # readings, events, plans, thresholds, pauses, devices, personal baselines
        assert len(CountingCursor.executed) == 7, CountingCursor.executed
    assert all(len(c.readings) == 3 and c.plans == ("hypertension",) and c.devices
               for c in contexts.values())
    assert all("systolic_bp" in c.thresholds for c in contexts.values())


def test_a_stored_reading_raises_its_alert_well_within_100_ms(db: str, dbconn: Conn) -> None:
    team_citizens = [enrolled(dbconn) for _ in range(12)]
    latencies = []
    with running_engine(db, system_clock, tick_s=3600) as engine:
        wait_for(engine.leading.is_set, timeout=10, what="engine leading")
        time.sleep(0.3)  # past its first tick
        for i, (device, citizen) in enumerate(team_citizens):
            store(dbconn, bp_rows(device, citizen, datetime.now(UTC), 1, systolic=200))
            committed = time.perf_counter()
            while not dbconn.execute("SELECT 1 FROM alerts WHERE citizen_id = %s AND rule = "
                                     "'threshold:blood_pressure'", (citizen,)).fetchone():
                assert time.perf_counter() - committed < 5, f"no alert for reading {i}"
                time.sleep(0.002)
            latencies.append(time.perf_counter() - committed)
            time.sleep(0.05)
    median = statistics.median(latencies)
    print(f"reading committed -> alert committed: median {median * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    assert median < 0.1, latencies
    assert max(latencies) < 0.5, latencies


def test_one_engine_leads_and_a_standby_takes_over_when_it_goes(db: str, dbconn: Conn) -> None:
    device, citizen = enrolled(dbconn)
    with running_engine(named(db, "engine-a"), system_clock) as first:
        wait_for(first.leading.is_set, timeout=10, what="first engine leading")
        with running_engine(named(db, "engine-b"), system_clock, standby_retry_s=0.2) as second:
            time.sleep(1.0)
            assert first.leading.is_set() and not second.leading.is_set()
            # The leader's connection dies (as when its process is killed): it loses the lock
            # with it, and the standby takes over.
            dbconn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'engine-a'")
            wait_for(second.leading.is_set, timeout=5, what="standby taking over")
            store(dbconn, bp_rows(device, citizen, datetime.now(UTC), 1, systolic=200))
            wait_for(lambda: any(r[1] == "threshold:blood_pressure" for r in _alerts(dbconn)),
                     timeout=5, what="the new leader's alert")
            assert second.counters.items == 3
            assert first.counters.retries >= 1


def test_a_lost_connection_mid_stream_loses_and_doubles_nothing(db: str, dbconn: Conn) -> None:
    citizens = [enrolled(dbconn) for _ in range(6)]
    done = threading.Event()

    def stream() -> None:
        for seq in range(1, 31):
            for device, citizen in citizens:
                at = datetime.now(UTC) - timedelta(seconds=600 - seq)
                store(dbconn_writer, bp_rows(device, citizen, at, seq, systolic=200))
        done.set()

    with psycopg.connect(db, autocommit=True) as dbconn_writer, \
            running_engine(named(db, "engine-x"), system_clock) as engine:
        wait_for(engine.leading.is_set, timeout=10, what="engine leading")
        writer = threading.Thread(target=stream)
        writer.start()
        for _ in range(3):
            time.sleep(0.3)
            dbconn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'engine-x'")
        writer.join(60)
        assert done.is_set()
        wait_for(lambda: scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 0,
                 timeout=20, what="queue drained")
    assert engine.counters.retries >= 1
    assert scalar(dbconn, "SELECT count(*) FROM alert_findings "
                  "WHERE rule = 'threshold:blood_pressure'") == 30 * len(citizens)
    counts = dbconn.execute("SELECT count FROM alerts WHERE rule = 'threshold:blood_pressure'"
                            ).fetchall()
    assert sorted(c for (c,) in counts) == [30] * len(citizens)


def test_the_tick_escalates_an_unacknowledged_red_alert_at_its_time(
        db: str, dbconn: Conn) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    device, citizen = enrolled(dbconn)
    store(dbconn, [], [button(device, citizen, clock.now, 1)])
    engine = AlertEngine(db, clock)
    with psycopg.connect(db, autocommit=True) as work:
        assert engine.drain_once(work) == 1
        assert _alerts(dbconn) == [(citizen, "emergency_button", "red", 1)]
        clock.advance(299)
        engine.tick_once(work)
        assert scalar(dbconn, "SELECT escalation_step FROM alerts WHERE rule = 'emergency_button'") == 0
        clock.advance(2)
        engine.tick_once(work)
    assert scalar(dbconn, "SELECT escalation_step FROM alerts WHERE rule = 'emergency_button'") == 1
    assert scalar(dbconn, "SELECT count(*) FROM alert_history h JOIN alerts a ON a.id = h.alert_id "
                  "WHERE a.rule = 'emergency_button' AND h.action = 'escalated'") == 1


def _battery(conn: Conn, device: str, pct: float, at: datetime) -> None:
    conn.execute("INSERT INTO device_status (device_id, online, status_received_at, "
                 "last_seen_at, battery_pct, updated_at) VALUES (%s, true, %s, %s, %s, %s) "
                 "ON CONFLICT (device_id) DO UPDATE SET battery_pct = EXCLUDED.battery_pct, "
                 "last_seen_at = EXCLUDED.last_seen_at", (device, at, at, pct, at))


def test_the_tick_resolves_a_cleared_condition_and_records_no_clear_without_an_alert(
        db: str, dbconn: Conn) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    low, low_citizen = enrolled(dbconn)
    fine, _ = enrolled(dbconn)
    # On their plans from now: nothing missed yet, so the tick finds battery states only.
    dbconn.execute("UPDATE citizen_plans SET valid = tstzrange(%s, NULL)", (clock.now,))
    _battery(dbconn, low, 10, clock.now)
    _battery(dbconn, fine, 90, clock.now)
    engine = AlertEngine(db, clock)
    with psycopg.connect(db, autocommit=True) as work:
        engine.tick_once(work)
        assert [r[:3] for r in _alerts(dbconn)] == [(low_citizen, "battery_low", "yellow")]
        _battery(dbconn, low, 80, clock.advance(60))
        engine.tick_once(work)
    assert scalar(dbconn, "SELECT state FROM alerts WHERE rule = 'battery_low'") == "resolved"
    # The finding that opened it and the clear that resolved it; none for the other citizen.
    assert scalar(dbconn, "SELECT count(*) FROM alert_findings") == 2


def test_a_stop_ends_the_engine_within_its_bound(db: str) -> None:
    engine = AlertEngine(db, system_clock, stop_timeout_s=2)
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,))
    thread.start()
    wait_for(engine.leading.is_set, timeout=10, what="engine leading")
    started = time.monotonic()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 2


def test_a_database_restart_costs_a_retry_and_the_engine_resumes(own_postgres: Any) -> None:
    dsn = own_postgres.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        device, citizen = enrolled(conn)

    def systolic_count() -> int:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return int(scalar(conn, "SELECT coalesce(max(count), 0) FROM alerts "
                              "WHERE rule = 'threshold:blood_pressure'"))

    with running_engine(dsn, system_clock) as engine:
        wait_for(engine.leading.is_set, timeout=10, what="engine leading")
        with psycopg.connect(dsn, autocommit=True) as conn:
            store(conn, bp_rows(device, citizen, datetime.now(UTC), 1, systolic=200))
        wait_for(lambda: systolic_count() == 1, timeout=10, what="the first alert")
        own_postgres.restart(down_for=2.0)
        with psycopg.connect(dsn, autocommit=True) as conn:
            store(conn, bp_rows(device, citizen, datetime.now(UTC), 2, systolic=200))
        wait_for(lambda: systolic_count() == 2, timeout=30, what="the alert after the restart")
        assert engine.counters.retries >= 1 and engine.counters.leader_sessions >= 2
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert scalar(conn, "SELECT count(*) FROM evaluation_queue") == 0


def test_a_press_during_retraining_is_evaluated_between_its_steps(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    enrolments = [enrolled(dbconn) for _ in range(2 * engine_module.RETRAIN_STEP)]
    engine = AlertEngine(db, clock)
    seen_between: list[list[tuple[Any, ...]]] = []
    real = engine._retrain
    device, citizen = enrolments[0]

    def retrain(conn: Conn, citizens: Any, now: datetime) -> Any:
        if not seen_between:  # the first step: a press arrives meanwhile
            store(dbconn, [], [button(device, citizen, clock.now, 1)])
        seen_between.append(_alerts(dbconn))
        return real(conn, citizens, now)

    monkeypatch.setattr(engine, "_retrain", retrain)
    with psycopg.connect(db, autocommit=True) as work:
        assert engine.retrain_once(work, clock.now, threading.Event()) == len(enrolments)
    assert seen_between == [[], [(citizen, "emergency_button", "red", 1)]]
