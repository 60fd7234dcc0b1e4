"""Replay: over generated series stored through the real ingest insert, replay gives the alerts
the live engine gave for the same readings (rule, severity, count, first and last measured
time, state, escalation), at the same measured times; and it reaches nobody: no alert
history, no webhook delivery, no screen message, no notification."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts import replay_repository
from alerts.engine import AlertEngine
from alerts.models import Bands
from alerts.replay import STATUS_RULES, ReplayRequest, parse_proposed, replay, run_replay
from tests.alerts.engine_support import (
    FakeClock,
    bp_rows,
    button,
    care_team,
    enrolled,
    scalar,
    store,
)

Conn = psycopg.Connection[Any]
BASE = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
TICK_S = 6 * 3600.0
OUTBOXES = ("alert_history", "webhook_deliveries", "screen_messages", "alerts",
            "alert_findings")

# A measurement: minutes after the previous one, systolic, diastolic, and whether the citizen
# also pressed the emergency button then.
measurements = st.lists(
    st.tuples(st.integers(min_value=1, max_value=20 * 60),
              st.sampled_from([85.0, 95.0, 120.0, 135.0, 165.0, 185.0, 210.0]),
              st.sampled_from([70.0, 80.0, 104.0, 115.0]),
              st.sampled_from([False, False, False, True])),
    min_size=1, max_size=12)


def _live_alerts(conn: Conn, citizen: Any) -> list[tuple[Any, ...]]:
    """The citizen's live alerts, but those of rules resting on device status (not replayed:
    its history is not stored)."""
    return conn.execute(
        "SELECT rule, severity, count, first_measured_at, last_measured_at, state, "
        "escalation_step FROM alerts WHERE citizen_id = %s AND rule <> ALL(%s) "
        "ORDER BY rule, first_measured_at", (citizen, sorted(STATUS_RULES))).fetchall()


def _replayed_alerts(conn: Conn, run_id: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT rule, severity, count, first_measured_at, last_measured_at, state, "
        "escalation_step FROM replay_alerts WHERE run_id = %s "
        "ORDER BY rule, first_measured_at", (run_id,)).fetchall()


def _counts(conn: Conn) -> dict[str, int]:
    return {table: scalar(conn, f"SELECT count(*) FROM {table}") for table in OUTBOXES}


def _live(db: str, conn: Conn, series: list[tuple[int, float, float, bool]]
          ) -> tuple[Any, datetime]:
    """Store the series in measured order, evaluating each measurement as it commits and
    ticking at the replay's tick times, with the clock at those times; returns (citizen,
    end of the period)."""
    device, citizen = enrolled(conn, "hypertension", "bp_monitor")
    at = BASE
    items = []
    for seq, (minutes, systolic, diastolic, pressed) in enumerate(series, start=1):
        at += timedelta(minutes=minutes)
        items.append((at, seq, systolic, diastolic, pressed))
    end = at + timedelta(seconds=1)
    ticks = [BASE + timedelta(seconds=TICK_S * k)
             for k in range(int((end - BASE).total_seconds() // TICK_S) + 1)]
    ticks = [t for t in ticks if t < end]
    clock = FakeClock(BASE)
    engine = AlertEngine(db, clock)
    # At one instant the engine drains before it ticks, as its loop does.
    timeline = sorted([(item[0], 0, item) for item in items] + [(t, 1, None) for t in ticks],
                      key=lambda step: (step[0], step[1]))
    with psycopg.connect(db, autocommit=True) as work:
        for now, kind, item in timeline:
            clock.now = now
            if kind == 0:
                assert item is not None
                measured, seq, systolic, diastolic, pressed = item
                store(conn, bp_rows(device, citizen, measured, seq, systolic, diastolic),
                      [button(device, citizen, measured, seq)] if pressed else None)
                while engine.drain_once(work):
                    pass
            else:
                engine.tick_once(work)
    return citizen, end


def test_replay_gives_the_alerts_the_live_engine_gave_and_notifies_nobody(
        db: str, dbconn: Conn) -> None:
    @settings(max_examples=15, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(series=measurements)
    def check(series: list[tuple[int, float, float, bool]]) -> None:
        citizen, end = _live(db, dbconn, series)
        live = _live_alerts(dbconn, citizen)
        before = _counts(dbconn)
        with psycopg.connect(db, autocommit=True) as listener:
            listener.execute("LISTEN telecare_alert_changes")
            listener.execute("LISTEN telecare_evaluation")
            result = replay(db, ReplayRequest(start=BASE, end=end, citizen_ids=(citizen,),
                                              tick_s=TICK_S, requested_by="test"),
                            FakeClock(end))
            heard = list(listener.notifies(timeout=0.2))
        assert _replayed_alerts(dbconn, result.run_id) == live
        # The screen reminders it counts (and does not send) are those the live engine sent.
        assert result.reminders == scalar(
            dbconn, "SELECT count(*) FROM screen_messages WHERE citizen_id = %s "
            "AND kind = 'reminder' AND alert_id IS NULL", citizen)
        reminded.append(result.reminders)
        assert _counts(dbconn) == before
        assert heard == []
        assert scalar(dbconn, "SELECT state FROM replay_runs WHERE id = %s",
                      result.run_id) == "done"

    reminded: list[int] = []
    check()
    assert any(reminded)  # some series ran past a window's deadline


def test_a_what_if_threshold_raises_what_it_would_have_and_stores_nothing_live(
        db: str, dbconn: Conn) -> None:
    device, citizen = enrolled(dbconn)
    for seq, systolic in enumerate([150.0, 152.0, 140.0, 155.0], start=1):
        store(dbconn, bp_rows(device, citizen, BASE + timedelta(hours=seq), seq, systolic))
    dbconn.execute("DELETE FROM evaluation_queue")
    proposed = parse_proposed(json.dumps({"systolic_bp": {
        "alert_low": 90, "warning_low": 100, "warning_high": 145, "alert_high": 151}}))
    assert proposed["systolic_bp"] == Bands(alert_low=90, warning_low=100, warning_high=145,
                                            alert_high=151)
    before = _counts(dbconn)
    with psycopg.connect(db) as conn, conn.transaction():
        result = run_replay(conn, ReplayRequest(
            start=BASE, end=BASE + timedelta(days=1), citizen_ids=(citizen,), proposed=proposed,
            tick_s=None), BASE + timedelta(days=30))
    rows = [(r["rule"], r["severity"], r["count"], r["threshold_version"])
            for r in replay_repository.run_alerts(dbconn, result.run_id)]
    # 152 and 155 are over the proposed red band, 150 only over yellow: one alert per rule,
    # worsened to red, counting the three readings over the warning band.
    assert rows == [("threshold:blood_pressure", "red", 3, -1)]
    assert _counts(dbconn) == before
    proposed_json = scalar(dbconn, "SELECT proposed FROM replay_runs WHERE id = %s",
                           result.run_id)
    assert proposed_json["systolic_bp"]["alert_high"] == 151


def test_a_replay_without_citizens_takes_everyone_with_data_in_the_period(
        db: str, dbconn: Conn) -> None:
    team = care_team(dbconn)
    enrolled_pairs = [enrolled(dbconn, team=team) for _ in range(3)]
    for device, citizen in enrolled_pairs[:2]:
        store(dbconn, bp_rows(device, citizen, BASE + timedelta(hours=1), 1, 200))
    dbconn.execute("DELETE FROM evaluation_queue")
    with psycopg.connect(db) as conn, conn.transaction():
        result = run_replay(conn, ReplayRequest(start=BASE, end=BASE + timedelta(hours=2),
                                                tick_s=None), BASE)
    replayed = {a.citizen_id for a in result.alerts}
    assert replayed == {citizen for _, citizen in enrolled_pairs[:2]}
    assert result.items == 6


def test_a_period_must_be_ordered_and_aware() -> None:
    with pytest.raises(ValueError, match="start before"):
        ReplayRequest(start=BASE, end=BASE)
    with pytest.raises(ValueError, match="offset"):
        ReplayRequest(start=BASE.replace(tzinfo=None), end=BASE + timedelta(days=1))


def test_the_replay_command_prints_its_run(db: str, dbconn: Conn, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from telecare.cli import main

    device, citizen = enrolled(dbconn)
    store(dbconn, bp_rows(device, citizen, BASE + timedelta(hours=1), 1, systolic=200))
    dbconn.execute("DELETE FROM evaluation_queue")
    monkeypatch.setenv("TELECARE_DATABASE_URL", db)
    # The command configures logging onto the captured stderr: put the handlers back after,
    # or later tests log onto a closed stream.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main(["alerts", "replay", "--from", BASE.isoformat(),
                     "--to", (BASE + timedelta(hours=3)).isoformat(), "--citizen", str(citizen),
                     "--thresholds", '{"diastolic_bp": {"warning_high": 70, "alert_high": 75}}',
                     "--tick-s", "3600"]) == 0
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    printed = json.loads(capsys.readouterr().out)
    assert printed["citizens"] == 1 and printed["items"] == 3
    assert printed["by_rule"]["threshold:blood_pressure red"] == 1
    parts = scalar(dbconn, "SELECT explanation->'metrics' FROM replay_alerts WHERE run_id = %s "
                   "AND rule = 'threshold:blood_pressure'",
                   printed["run_id"])
    assert sorted(parts) == ["diastolic_bp", "systolic_bp"]  # diastolic 80 over the proposed 75
    assert scalar(dbconn, "SELECT count(*) FROM replay_alerts WHERE run_id = %s",
                  printed["run_id"]) == printed["alerts"]
    assert scalar(dbconn, "SELECT count(*) FROM alerts") == 0


def test_the_simulated_nurse_resolves_alerts_so_that_a_later_episode_opens_a_new_one(
        db: str, dbconn: Conn) -> None:
    device, citizen = enrolled(dbconn)
    for day, seq in ((0, 1), (3, 2)):  # two high readings three days apart
        store(dbconn, bp_rows(device, citizen, BASE + timedelta(days=day), seq, 185.0))
    period = {"start": BASE - timedelta(hours=1), "end": BASE + timedelta(days=5),
              "citizen_ids": (citizen,), "tick_s": TICK_S}
    with dbconn.transaction():
        kept_open = run_replay(dbconn, ReplayRequest(**period), BASE)
        nursed = run_replay(dbconn, ReplayRequest(**period, resolve_after=timedelta(hours=24)),
                            BASE)
    systolic = [a for a in kept_open.alerts if a.rule == "threshold:blood_pressure"]
    assert [(a.count, a.state.value) for a in systolic] == [(2, "open")]
    resolved = [a for a in nursed.alerts if a.rule == "threshold:blood_pressure"]
    assert [(a.count, a.state.value, a.outcome) for a in resolved] == [
        (1, "resolved", "other"), (1, "resolved", "other")]
    # At the first tick a day or more after it opened.
    due = resolved[0].opened_at + timedelta(hours=24)
    assert resolved[0].resolved_at is not None
    assert due <= resolved[0].resolved_at < due + timedelta(seconds=TICK_S)
