"""Inactivity of a frail citizen living alone: no motion 04:00-10:00 local, or 4 h without motion
in the day (until 21:00); red; not while paused or with the motion sensor offline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerts.models import Severity
from alerts.rules import evaluate_tick
from tests.alerts.test_rules_common import context, device, event

BY = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)  # 10:00 local in winter
PIR = device("pir", "motion_sensor", status_at=BY - timedelta(hours=1))


def _inactivity(findings: list) -> list:
    return [f for f in findings if f.rule == "inactivity"]


def _ctx(*motions: datetime, **kwargs: object) -> object:
    return context(("frail_alone",), events=tuple(event("motion", at, seq=i, device="pir")
                                                   for i, at in enumerate(motions)),
                   devices=kwargs.pop("devices", (PIR,)), **kwargs)  # type: ignore[arg-type]


def test_no_motion_by_ten_is_red_at_ten_not_before() -> None:
    yesterday = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
    assert _inactivity(evaluate_tick(_ctx(yesterday), BY - timedelta(seconds=1))) == []
    (found,) = _inactivity(evaluate_tick(_ctx(yesterday), BY))
    assert found.severity is Severity.RED and found.occurrence == "2026-12-02:morning"
    assert found.is_current and found.explanation["last_motion"] == yesterday.isoformat()


def test_motion_in_the_morning_window_counts() -> None:
    for at in (datetime(2026, 12, 2, 3, 0, tzinfo=UTC), BY - timedelta(seconds=1)):  # 04:00, 09:59
        assert _inactivity(evaluate_tick(_ctx(at), BY)) == []
    before_start = datetime(2026, 12, 2, 2, 59, tzinfo=UTC)  # 03:59 local
    assert len(_inactivity(evaluate_tick(_ctx(before_start), BY))) == 1


def test_four_quiet_hours_in_the_day() -> None:
    last = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # 13:00 local
    morning = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
    assert _inactivity(evaluate_tick(_ctx(morning, last), last + timedelta(hours=4, seconds=-1))) == []
    (found,) = _inactivity(evaluate_tick(_ctx(morning, last), last + timedelta(hours=4)))
    assert found.explanation["check"] == "daytime_quiet"
    assert found.occurrence == f"2026-12-02:quiet:{last.isoformat()}"


def test_quiet_that_runs_past_the_day_end_is_the_night() -> None:
    evening = datetime(2026, 12, 2, 17, 30, tzinfo=UTC)  # 18:30 local: 4 h later is 22:30
    morning = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
    assert _inactivity(evaluate_tick(_ctx(morning, evening), evening + timedelta(hours=5))) == []


def test_not_during_a_pause_nor_with_the_sensor_offline_nor_without_one() -> None:
    old = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
    assert _inactivity(evaluate_tick(_ctx(old, pauses=((BY - timedelta(days=1), None),)), BY)) == []
    offline = device("pir", "motion_sensor", online=False, status_at=BY - timedelta(hours=12))
    assert _inactivity(evaluate_tick(_ctx(old, devices=(offline,)), BY)) == []
    assert _inactivity(evaluate_tick(_ctx(old, devices=()), BY)) == []


def test_only_frail_alone_plans_watch_inactivity() -> None:
    ctx = context(("copd",), devices=(PIR,))
    assert _inactivity(evaluate_tick(ctx, BY)) == []


def test_settings_move_the_time_of_day() -> None:
    old = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
    later = {"frail_alone": {"inactivity": {"by": "11:00"}}}
    assert _inactivity(evaluate_tick(_ctx(old, settings=later), BY)) == []
    assert len(_inactivity(evaluate_tick(_ctx(old, settings=later), BY + timedelta(hours=1)))) == 1


def test_the_days_quiet_counts_from_ten_after_a_night_trip() -> None:
    night = datetime(2026, 12, 2, 3, 30, tzinfo=UTC)  # 04:30 local: the morning check is content
    assert _inactivity(evaluate_tick(_ctx(night), BY + timedelta(hours=3, minutes=59))) == []
    (found,) = _inactivity(evaluate_tick(_ctx(night), BY + timedelta(hours=4)))
    assert found.explanation["check"] == "daytime_quiet"
