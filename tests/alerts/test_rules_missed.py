"""Missed measurements (window plus grace on the Copenhagen clock, one occurrence per metric,
day and window, not counted in a pause; the first miss reminds the citizen, the second in a row
tells the team) and not_measuring (misses while the device is online)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerts.models import Severity
from alerts.rules import evaluate_tick
from tests.alerts.test_rules_common import context, device, reading

# Hypertension: systolic_bp 06:00-11:00 and 18:00-23:00 local, 1 h grace. Winter: UTC+1.
MORNING_DEADLINE = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)  # 12:00 local = 11:00 + 1 h grace
EVENING_DEADLINE = datetime(2026, 12, 2, 23, 0, tzinfo=UTC)  # 00:00 local = 23:00 + 1 h grace


def _missed(findings: list, metric: str = "systolic_bp") -> list:
    """The findings for the care team (not the citizen's reminders)."""
    return [f for f in findings if f.rule == f"missed:{metric}" and not f.reminder]


def _reminders(findings: list, metric: str = "systolic_bp") -> list:
    return [f for f in findings if f.rule == f"missed:{metric}" and f.reminder]


def _plan_start(days: float) -> dict:
    return {"hypertension": {"valid_from": (MORNING_DEADLINE - timedelta(days=days)).isoformat()}}


def test_a_first_miss_reminds_her_only_after_window_plus_grace() -> None:
    settings = _plan_start(0.5)  # plan started 23:00 local the day before
    before = evaluate_tick(context(("hypertension",), settings=settings),
                           MORNING_DEADLINE - timedelta(seconds=1))
    assert _missed(before) == [] and _reminders(before) == []
    found = evaluate_tick(context(("hypertension",), settings=settings), MORNING_DEADLINE)
    assert _missed(found) == []
    (reminder,) = _reminders(found)
    assert reminder.occurrence == "remind:systolic_bp:2026-12-02:06:00-11:00"
    assert reminder.is_current and not reminder.held and not reminder.clears
    assert reminder.explanation == {"metric": "systolic_bp", "day": "2026-12-02",
                                    "window": "06:00-11:00"}


def test_the_second_miss_in_a_row_tells_the_team() -> None:
    found = evaluate_tick(context(("hypertension",), settings=_plan_start(0.5)), EVENING_DEADLINE)
    (missed,) = _missed(found)
    assert missed.severity is Severity.YELLOW and missed.self_resolving and not missed.clears
    assert missed.occurrence == "systolic_bp:2026-12-02:18:00-23:00"
    assert missed.measured_at == EVENING_DEADLINE and missed.is_current
    assert missed.explanation["in_a_row"] == 2
    assert [r.occurrence for r in _reminders(found)] == ["remind:systolic_bp:2026-12-02:18:00-23:00"]


def test_a_miss_after_a_measurement_starts_the_count_again() -> None:
    morning = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    ctx = context(("hypertension",), readings=(reading("systolic_bp", 130, morning),),
                  settings=_plan_start(1.5))  # the evening before was missed too
    found = evaluate_tick(ctx, EVENING_DEADLINE)
    assert _missed(found) == [] and len(_reminders(found)) == 1


def test_a_plan_may_tell_the_team_of_the_first_miss() -> None:
    settings = {"hypertension": {**_plan_start(0.5)["hypertension"], "schedule": {
        "systolic_bp": {"alert_after_missed": 1}}}}
    found = evaluate_tick(context(("hypertension",), settings=settings), MORNING_DEADLINE)
    assert [(f.occurrence, f.explanation["in_a_row"]) for f in _missed(found)] == [
        ("systolic_bp:2026-12-02:06:00-11:00", 1)]


def test_a_reading_in_the_window_or_grace_counts() -> None:
    settings = _plan_start(0.5)
    for at in (datetime(2026, 12, 2, 5, 0, tzinfo=UTC),            # 06:00 local, the start
               MORNING_DEADLINE - timedelta(minutes=1)):            # in the grace
        ctx = context(("hypertension",), readings=(reading("systolic_bp", 130, at),),
                      settings=settings)
        (found,) = _missed(evaluate_tick(ctx, MORNING_DEADLINE))
        assert found.clears and found.occurrence.startswith("clear:")
    early = datetime(2026, 12, 2, 4, 59, tzinfo=UTC)                # 05:59 local
    ctx = context(("hypertension",), readings=(reading("systolic_bp", 130, early),), settings=settings)
    assert _missed(evaluate_tick(ctx, MORNING_DEADLINE)) == []
    assert len(_reminders(evaluate_tick(ctx, MORNING_DEADLINE))) == 1


def test_every_miss_since_the_second_in_a_row_once_each() -> None:
    measured = datetime(2026, 11, 30, 19, 0, tzinfo=UTC)  # evening of 30 Nov
    ctx = context(("hypertension",), readings=(reading("systolic_bp", 130, measured),),
                  settings=_plan_start(3))
    found = _missed(evaluate_tick(ctx, MORNING_DEADLINE))
    # 1 Dec morning was the first miss: a reminder then, not an alert now.
    assert [f.occurrence for f in found] == ["systolic_bp:2026-12-01:18:00-23:00",
                                             "systolic_bp:2026-12-02:06:00-11:00"]
    assert [f.explanation["in_a_row"] for f in found] == [2, 3]
    assert [f.is_current for f in found] == [False, True]


def test_windows_in_a_pause_are_not_counted() -> None:
    pause = ((datetime(2026, 12, 1, 0, 0, tzinfo=UTC), None),)
    ctx = context(("hypertension",), pauses=pause, settings=_plan_start(3))
    found = evaluate_tick(ctx, MORNING_DEADLINE)
    assert [f.occurrence for f in _missed(found)] == ["systolic_bp:2026-11-30:06:00-11:00",
                                                      "systolic_bp:2026-11-30:18:00-23:00"]
    (reminder,) = _reminders(found)
    assert reminder.held  # she is paused now: her screen is not reminded


def test_windows_before_the_plan_started_are_not_counted() -> None:
    assert _missed(evaluate_tick(context(("hypertension",), settings=_plan_start(0.1)),
                                 MORNING_DEADLINE)) == []


def test_dst_window_follows_local_time() -> None:
    # Summer: 06:00-11:00 local is 04:00-09:00 UTC; the deadline 12:00 local is 10:00 UTC.
    summer = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    settings = {"hypertension": {"valid_from": (summer - timedelta(hours=12)).isoformat()}}
    assert _reminders(evaluate_tick(context(("hypertension",), settings=settings),
                                    summer - timedelta(seconds=1))) == []
    assert len(_reminders(evaluate_tick(context(("hypertension",), settings=settings), summer))) == 1


def test_settings_override_windows_and_grace() -> None:
    settings = {"hypertension": {**_plan_start(0.5)["hypertension"], "schedule": {
        "systolic_bp": {"windows": [{"start": "06:00", "end": "08:00"}], "grace_minutes": 0}}}}
    at = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)  # 08:00 local
    (found,) = _reminders(evaluate_tick(context(("hypertension",), settings=settings), at))
    assert found.occurrence == "remind:systolic_bp:2026-12-02:06:00-08:00"


def test_misses_while_the_device_is_online_are_not_measuring_and_nothing_else() -> None:
    settings = _plan_start(3)
    bp_online = device("bp", "bp_monitor", status_at=MORNING_DEADLINE - timedelta(hours=1))
    found = evaluate_tick(context(("hypertension",), devices=(bp_online,), settings=settings),
                          MORNING_DEADLINE)
    silent = [f for f in found if f.rule == "not_measuring"]
    # The run of six misses began on 29 Nov evening: the team hears of it from the second on.
    assert [f.explanation["in_a_row"] for f in silent] == [2, 3, 4, 5, 6]
    assert silent[-1].occurrence == "systolic_bp:2026-12-02:06:00-11:00"
    assert all(f.self_resolving and not f.clears for f in silent)
    assert silent[-1].explanation["devices_online"] == ["bp"] and "bp is online" in silent[-1].summary
    assert _missed(found) == []  # one problem, one alert: not also missed:systolic_bp
    assert len(_reminders(found)) == 1


def test_a_day_of_windows_is_missed_before_the_team_hears() -> None:
    # Diabetes: three glucose windows a day (06:00-09:30, 11:00-14:30, 17:00-20:30 local).
    settings = {"diabetes": {"valid_from": datetime(2026, 12, 1, 23, 0, tzinfo=UTC).isoformat()}}
    lunch_deadline = datetime(2026, 12, 2, 14, 30, tzinfo=UTC)    # 15:30 local
    dinner_deadline = datetime(2026, 12, 2, 20, 30, tzinfo=UTC)   # 21:30 local
    ctx = context(("diabetes",), settings=settings)
    assert _missed(evaluate_tick(ctx, lunch_deadline), "blood_glucose") == []
    (found,) = _missed(evaluate_tick(ctx, dinner_deadline), "blood_glucose")
    assert found.explanation["in_a_row"] == 3


def test_not_measuring_is_not_raised_for_an_offline_device() -> None:
    bp_off = device("bp", "bp_monitor", online=False, status_at=MORNING_DEADLINE - timedelta(days=3))
    found = evaluate_tick(context(("hypertension",), devices=(bp_off,), settings=_plan_start(3)),
                          MORNING_DEADLINE)
    assert [f.clears for f in found if f.rule == "not_measuring"] == [True]
    assert [f.rule for f in found if f.rule == "device_offline" and not f.clears] == ["device_offline"]


def test_not_measuring_clears_after_a_measurement() -> None:
    bp_online = device("bp", "bp_monitor", status_at=MORNING_DEADLINE)
    ctx = context(("hypertension",), devices=(bp_online,), settings=_plan_start(3),
                  readings=(reading("systolic_bp", 130, MORNING_DEADLINE - timedelta(hours=2)),))
    assert [f.clears for f in evaluate_tick(ctx, MORNING_DEADLINE) if f.rule == "not_measuring"] == [True]
