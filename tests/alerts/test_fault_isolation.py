"""A defect never blocks the good ones, on the real database: a rule that raises becomes a
rule_failed alert while the citizen's other rules still run; a citizen whose items cannot be
evaluated at all is parked with an evaluation_failed alert while every other citizen's items
are evaluated, and `requeue` puts hers back; the tick, escalation and retraining go on past a
citizen they cannot handle. (The defects are injected by replacing one function for one
citizen; broker and database are real.)"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

import alerts.engine as engine_module
import alerts.retraining as retraining_module
from alerts import baseline_repository, context_repository, service
from alerts.engine import AlertEngine
from alerts.models import CitizenContext, EventView, Finding, ReadingView, Severity
from alerts.rules import anomaly, guard
from core.roles import process_dsn
from telecare import erasure
from tests.alerts.engine_support import FakeClock, bp_rows, button, enrolled, scalar, store
from tests.alerts.test_baselines_engine import engine_conn, history

Conn = psycopg.Connection[Any]
SECRET = "value 213 mmHg"  # what an exception's message could quote: never logged


def _alerts(conn: Conn, citizen: UUID) -> list[tuple[str, str, int]]:
    rows = conn.execute("SELECT rule, severity, count FROM alerts WHERE citizen_id = %s "
                        "ORDER BY rule", (citizen,)).fetchall()
    return [tuple(row) for row in rows]


def _with_history(dbconn: Conn, clock: FakeClock, count: int) -> list[tuple[UUID, str]]:
    """`count` enrolled citizens with 20 days of blood pressure, all of it evaluated already:
    (citizen, device), in the order enrolled."""
    enrolments = []
    for _ in range(count):
        device, citizen = enrolled(dbconn)
        history(dbconn, device, citizen, 20, clock.now)
        enrolments.append((citizen, device))
    dbconn.execute("DELETE FROM evaluation_queue")  # as if evaluated
    return enrolments


def _failing_for(citizen: UUID, real: Callable[..., Any]) -> Callable[..., Any]:
    """`real`, but raising a defect when its first argument is (or names) `citizen`."""
    def broken(first: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(first, "citizen_id", first) == citizen:
            raise ZeroDivisionError(SECRET)
        return real(first, *args, **kwargs)
    return broken


def test_a_raising_rule_becomes_an_alert_and_the_other_rules_still_run(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=200),
          [button(device, citizen, clock.now, 2)])
    monkeypatch.setattr(anomaly, "evaluate_new", _failing_for(citizen, anomaly.evaluate_new))
    monkeypatch.setattr(guard, "_logged", set())  # logged once per process: this once
    with engine_conn(db) as work, caplog.at_level(logging.ERROR):
        assert AlertEngine(process_dsn(db, "alerts"), clock).drain_once(work) == 4
    assert _alerts(dbconn, citizen) == [("emergency_button", "red", 1),
                                        ("rule_failed:anomaly", "yellow", 1),
                                        ("threshold:blood_pressure", "red", 1)]
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 0
    assert "ZeroDivisionError" in caplog.text and SECRET not in caplog.text


def test_the_guard_is_as_severe_as_the_rule_and_never_holds_the_button() -> None:
    now = FakeClock().now
    ctx = CitizenContext(citizen_id=UUID(int=1), plans=("copd",), thresholds={},
                         pauses=((now - timedelta(days=1), None),))

    def defect() -> list[Finding]:
        raise KeyError(SECRET)

    news2 = guard.run(ctx, now, "news2", defect, tick=False)
    button_rule = guard.run(ctx, now, "events", defect, tick=False)
    missed = guard.run(ctx, now, "missed", defect, tick=True)
    assert [(f.rule, f.severity, f.held) for f in news2 + button_rule + missed] == [
        ("rule_failed:news2", Severity.RED, True), ("rule_failed:events", Severity.RED, False),
        ("rule_failed:missed", Severity.YELLOW, True)]
    assert SECRET not in str(news2[0].explanation)
    assert guard.run(ctx, now, "news2", list, tick=False) == []


def test_a_citizen_who_cannot_be_evaluated_is_parked_and_the_others_go_on(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    bad_device, bad = enrolled(dbconn)
    good_device, good = enrolled(dbconn)
    store(dbconn, bp_rows(bad_device, bad, clock.now, 1, systolic=200)
          + bp_rows(good_device, good, clock.now, 1, systolic=200))
    # Not a rule: what the engine runs around the rules fails for one citizen.
    monkeypatch.setattr(engine_module, "evaluate_new",
                        _failing_for(bad, engine_module.evaluate_new))
    engine = AlertEngine(process_dsn(db, "alerts"), clock)
    with engine_conn(db) as work, caplog.at_level(logging.ERROR):
        assert engine.drain_once(work) == 6
    assert _alerts(dbconn, good) == [("threshold:blood_pressure", "red", 1)]
    assert _alerts(dbconn, bad) == [("evaluation_failed", "red", 1)]
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 0
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_failures WHERE citizen_id = %s "
                  "AND error LIKE 'ZeroDivisionError at %%'", bad) == 3
    assert engine.counters.parked == 3
    assert SECRET not in caplog.text

    # The defect fixed, her items are put back and evaluated.
    monkeypatch.undo()
    with engine_conn(db) as work:
        assert context_repository.requeue(work, bad) == 3
        assert engine.drain_once(work) == 3
    assert _alerts(dbconn, bad) == [("evaluation_failed", "red", 1),
                                    ("threshold:blood_pressure", "red", 1)]
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_failures") == 0


def test_items_whose_alert_cannot_be_stored_stay_queued_and_the_others_go_on(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    bad_device, bad = enrolled(dbconn)
    good_device, good = enrolled(dbconn)
    store(dbconn, bp_rows(bad_device, bad, clock.now, 1, systolic=200),
          [button(good_device, good, clock.now, 1)])
    real = service.record_findings

    def broken(conn: Conn, citizen: UUID, *args: Any) -> list[int]:
        if citizen == bad:
            raise psycopg.errors.DataError("NaN cannot be stored")
        return real(conn, citizen, *args)

    monkeypatch.setattr(service, "record_findings", broken)
    engine = AlertEngine(process_dsn(db, "alerts"), clock)
    with engine_conn(db) as work:
        # Not parked without an alert: the session ends (and would retry after a back-off).
        with pytest.raises(psycopg.errors.DataError):
            engine.drain_once(work)
    assert _alerts(dbconn, good) == [("emergency_button", "red", 1)]
    assert _alerts(dbconn, bad) == []
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue WHERE citizen_id = %s", bad) == 3
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_failures") == 0


def test_a_citizen_known_to_fail_costs_a_later_batch_one_retry(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    enrolments = [enrolled(dbconn) for _ in range(4)]
    bad = enrolments[0][1]
    monkeypatch.setattr(engine_module, "evaluate_new",
                        _failing_for(bad, engine_module.evaluate_new))
    engine = AlertEngine(process_dsn(db, "alerts"), clock)
    takes: list[int] = []
    real_take = context_repository.take_citizens

    def counted(conn: Conn, citizens: Any, *args: Any) -> Any:
        takes.append(len(citizens))
        return real_take(conn, citizens, *args)

    monkeypatch.setattr(context_repository, "take_citizens", counted)
    with engine_conn(db) as work:
        for seq in (1, 2):
            store(dbconn, [row for device, citizen in enrolments
                           for row in bp_rows(device, citizen, clock.now, seq, systolic=125)])
            takes.clear()
            assert engine.drain_once(work) == 12
            if seq == 1:
                assert takes == [1, 1, 1, 1]  # not known yet: one citizen at a time
        assert takes == [3, 1]  # the three others together, then her alone
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_failures WHERE citizen_id = %s",
                  bad) == 6
    assert _alerts(dbconn, bad) == [("evaluation_failed", "red", 2)]


def test_a_lost_connection_is_not_a_defect_and_keeps_the_batch_queued(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=200))

    def lost(*_args: Any) -> list[Finding]:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(engine_module, "evaluate_new", lost)
    with engine_conn(db) as work:
        with pytest.raises(psycopg.OperationalError):
            AlertEngine(process_dsn(db, "alerts"), clock).drain_once(work)
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_queue") == 3
    assert scalar(dbconn, "SELECT count(*) FROM evaluation_failures") == 0


def test_the_tick_goes_on_past_a_citizen_it_cannot_evaluate(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    _, bad = enrolled(dbconn)
    _, good = enrolled(dbconn)  # measures nothing: her missed measurements are found
    monkeypatch.setattr(engine_module, "evaluate_tick",
                        _failing_for(bad, engine_module.evaluate_tick))
    engine = AlertEngine(process_dsn(db, "alerts"), clock)
    with engine_conn(db) as work:
        engine.tick_once(work)
        clock.advance(600)
        engine.tick_once(work)  # the same hour: the same occurrence, counted once
    assert engine.counters.ticks == 2 and engine.counters.skipped == 2
    assert _alerts(dbconn, bad) == [("evaluation_failed", "red", 1)]
    assert any(rule.startswith("missed:") for rule, _, _ in _alerts(dbconn, good))


def test_retraining_leaves_out_a_citizen_it_cannot_train_instead_of_retrying_her_first(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    enrolments = _with_history(dbconn, clock, 3)
    first, first_device = min(enrolments)  # due first: none is trained; the order is by id
    real = retraining_module.train_from_history

    def broken(history_: Any, *args: Any, **kwargs: Any) -> Any:
        if any(reading.device_id == first_device for reading in history_.readings):
            raise ZeroDivisionError(SECRET)
        return real(history_, *args, **kwargs)

    monkeypatch.setattr(retraining_module, "train_from_history", broken)
    engine = AlertEngine(process_dsn(db, "alerts"), clock, retrain_chunk=1)
    with engine_conn(db) as work:
        trained = [engine.retrain_once(work, clock.now) for _ in range(3)]
    assert trained == [0, 1, 1]
    assert engine.counters.skipped == 1
    assert scalar(dbconn, "SELECT count(DISTINCT citizen_id) FROM anomaly_baselines") == 2
    assert scalar(dbconn, "SELECT count(*) FROM anomaly_baselines WHERE citizen_id = %s",
                  first) == 0


def test_a_retraining_that_overlaps_an_erasure_stores_nothing_of_hers(
        db: str, dbconn: Conn) -> None:
    clock = FakeClock()
    ((citizen, _),) = _with_history(dbconn, clock, 1)
    engine = AlertEngine(process_dsn(db, "alerts"), clock)
    with psycopg.connect(db) as eraser, engine_conn(db) as work:
        # The erasure has stopped her processing but not yet committed when retraining saves.
        erasure._stop_processing(eraser, citizen, clock.now)
        eraser.execute("DELETE FROM anomaly_baselines WHERE citizen_id = %s", (citizen,))
        done: list[int] = []
        retraining = threading.Thread(target=lambda: done.append(
            engine.retrain_once(work, clock.now)))
        retraining.start()
        retraining.join(1.0)
        assert retraining.is_alive()  # waiting for the erasure
        eraser.commit()
        retraining.join(10.0)
    assert done == [0]
    assert scalar(dbconn, "SELECT count(*) FROM anomaly_baselines WHERE citizen_id = %s",
                  citizen) == 0


def test_a_baseline_that_cannot_be_stored_leaves_out_only_its_citizen(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    citizens = [citizen for citizen, _ in _with_history(dbconn, clock, 3)]
    bad = citizens[1]
    real = baseline_repository.save

    def broken(conn: Conn, trained: Any) -> set[UUID]:
        if bad in trained:
            raise psycopg.errors.DataError("invalid input syntax for type json")
        return real(conn, trained)

    monkeypatch.setattr(baseline_repository, "save", broken)
    engine = AlertEngine(process_dsn(db, "alerts"), clock)
    with engine_conn(db) as work:
        assert engine.retrain_once(work, clock.now) == 2
        assert engine.retrain_once(work, clock.now) == 0  # not tried again first
    assert engine.counters.skipped == 1
    stored = {row[0] for row in dbconn.execute("SELECT citizen_id FROM anomaly_baselines")}
    assert stored == set(citizens) - {bad}


def test_a_failed_rule_is_current_when_any_item_is_and_names_what_it_looked_at() -> None:
    now = FakeClock().now
    late = ReadingView(device_id="d-bp", metric="systolic_bp", measured_at=now - timedelta(seconds=1),
                       seq=7, value=130.0, received_at=now, late=True, delay_cause="device")
    press = EventView(device_id="d-btn", kind="emergency_button",
                      measured_at=now - timedelta(seconds=5), seq=3, received_at=now)
    ctx = CitizenContext(citizen_id=UUID(int=2), plans=(), thresholds={},
                         new_readings=(late,), new_events=(press,))
    button_rule = guard.failed(ctx, now, "events", "KeyError", tick=False)
    assert button_rule.is_current and "emergency_button" in button_rule.occurrence
    threshold_rule = guard.failed(ctx, now, "threshold", "KeyError", tick=False)
    assert not threshold_rule.is_current  # it looked at the late reading only
    assert guard.failed(ctx, now, "rate", "KeyError", tick=False,
                        worst=Severity.RED).severity is Severity.RED


def test_parked_readings_are_not_learnt_before_they_are_evaluated(
        db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    history(dbconn, device, citizen, 20, clock.now - timedelta(hours=2))
    dbconn.execute("DELETE FROM evaluation_queue")  # as if evaluated
    store(dbconn, bp_rows(device, citizen, clock.now - timedelta(hours=1), 9_999, systolic=150))
    monkeypatch.setattr(engine_module, "evaluate_new",
                        _failing_for(citizen, engine_module.evaluate_new))
    engine = AlertEngine(process_dsn(db, "alerts"), clock)
    with engine_conn(db) as work:
        assert engine.drain_once(work) == 3
        assert engine.retrain_once(work, clock.now) == 1
    trained_through = scalar(dbconn, "SELECT max(trained_through) FROM anomaly_baselines "
                                     "WHERE citizen_id = %s", citizen)
    assert trained_through < clock.now - timedelta(hours=1)
