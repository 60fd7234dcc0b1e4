"""Adherence of one citizen: windows scheduled wholly within the enrolment, their plan and the
past, not paused; on time when a reading came within the window or its grace."""

from __future__ import annotations

from datetime import datetime, timedelta

from alerts.plans import LOCAL
from pilots.adherence import PlanPeriod, Tally, adherence, scheduled_metrics


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=LOCAL)


ENROLLED = [(local(10, 0), local(13, 0))]  # three whole days
HYPERTENSION = PlanPeriod("hypertension", local(1, 0), None, {})  # 06-11 and 18-23, 1 h grace
NOW = local(20, 0)


def test_six_windows_in_three_days_and_the_grace_counts() -> None:
    readings = {"systolic_bp": [local(10, 7), local(10, 23, 30), local(11, 12, 30)]}
    assert adherence([HYPERTENSION], ENROLLED, [], readings, NOW) == {
        "systolic_bp": Tally(scheduled=6, on_time=2)}


def test_windows_outside_the_enrolment_plan_pauses_or_future_are_not_scheduled() -> None:
    late_plan = PlanPeriod("hypertension", local(10, 12), local(12, 12), {})
    assert adherence([late_plan], ENROLLED, [], {}, NOW) == {
        "systolic_bp": Tally(scheduled=4, on_time=0)}  # 10 evening, 11 both, 12 morning
    paused = [(local(11, 0), local(12, 0))]
    assert adherence([HYPERTENSION], ENROLLED, paused, {}, NOW)["systolic_bp"].scheduled == 4
    # Now at 23:30 on the last day: its evening window's deadline (midnight) has not passed.
    assert adherence([HYPERTENSION], ENROLLED, [], {}, local(12, 23, 30))[
        "systolic_bp"].scheduled == 5
    assert adherence([HYPERTENSION], [(local(10, 7), local(13, 0))], [], {}, NOW)[
        "systolic_bp"].scheduled == 5  # the first morning began before the enrolment


def test_plans_scheduling_the_same_window_count_it_once_and_unknown_plans_nothing() -> None:
    again = PlanPeriod("hypertension", local(5, 0), None, {"schedule": {"systolic_bp": {
        "grace_minutes": 0}}})
    unknown = PlanPeriod("no_such_plan", local(1, 0), None, {})
    tallies = adherence([again, HYPERTENSION, unknown], ENROLLED, [],
                        {"systolic_bp": [local(10, 23, 30)]}, NOW)
    # One window per slot; the shorter grace: 23:30 is late.
    assert tallies == {"systolic_bp": Tally(scheduled=6, on_time=0)}
    assert scheduled_metrics([HYPERTENSION, unknown]) == ["systolic_bp"]


def test_invalid_stored_settings_fall_back_to_the_template() -> None:
    broken = PlanPeriod("hypertension", local(1, 0), None, {"schedule": {"spo2": {}}})
    assert adherence([broken], ENROLLED, [], {}, NOW)["systolic_bp"].scheduled == 6


def test_a_frail_plan_schedules_nothing() -> None:
    assert adherence([PlanPeriod("frail_alone", local(1, 0), None, {})], ENROLLED, [], {},
                     NOW + timedelta(days=1)) == {}
