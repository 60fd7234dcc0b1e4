"""Adherence: of the measurements a citizen's plans asked for, how many came on time. Pure.

A window counts as scheduled when it lies wholly within an enrolment (clipped to the period
asked about), its deadline (window end plus grace) has passed, its plan was in force at its
start (and after the plan's own `valid_from`, as for missed measurements), and no pause
overlaps it. It counts as on time when a reading of its metric was measured within the window
or its grace: the same rule as alerts/rules/schedule.py, so a pilot's adherence and its
missed-measurement alerts agree. Two plans scheduling one metric in the same window count once
(the shorter grace), as the engine combines them."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from alerts.errors import InvalidPlan
from alerts.plans import LOCAL, PLANS, PlanSettings, apply_settings, validate_settings


@dataclass(frozen=True)
class PlanPeriod:
    plan: str
    valid_from: datetime
    valid_until: datetime | None
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Tally:
    scheduled: int = 0
    on_time: int = 0


def scheduled_metrics(periods: Sequence[PlanPeriod]) -> list[str]:
    """The metrics the plans schedule (the readings adherence needs)."""
    return sorted({s.metric for p in periods if p.plan in PLANS for s in PLANS[p.plan].measurements})


def _days(lo: datetime, hi: datetime) -> list[date]:
    first, last = lo.astimezone(LOCAL).date() - timedelta(days=1), hi.astimezone(LOCAL).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def adherence(periods: Sequence[PlanPeriod], enrolled: Sequence[tuple[datetime, datetime]],
              pauses: Sequence[tuple[datetime, datetime | None]],
              readings: Mapping[str, Sequence[datetime]], now: datetime) -> dict[str, Tally]:
    """Per metric, the windows scheduled and those measured on time, for one citizen.
    `readings` holds each metric's measured times, sorted."""
    windows: dict[tuple[str, datetime], tuple[datetime, timedelta]] = {}
    for period in periods:
        template = PLANS.get(period.plan)
        if template is None:
            continue
        try:
            checked = validate_settings(period.plan, period.settings)
        except InvalidPlan:
            checked = PlanSettings()  # as the engine does: the template's schedule
        plan_start = max(period.valid_from, checked.valid_from or period.valid_from)
        for since, until in enrolled:
            for scheduled in apply_settings(template, checked).measurements:
                for window in scheduled.windows:
                    for day in _days(since, until):
                        start, end = window.on(day)
                        if not (plan_start <= start and (period.valid_until is None
                                                         or start < period.valid_until)):
                            continue
                        if start < since or end + scheduled.grace > min(until, now):
                            continue
                        key = (scheduled.metric, start)
                        known = windows.get(key)
                        if known is None or known[1] > scheduled.grace:
                            windows[key] = (end, scheduled.grace)
    tallies: dict[str, Tally] = {}
    for (metric, start), (end, grace) in sorted(windows.items()):
        deadline = end + grace
        if any(p_start < deadline and (p_end is None or start < p_end) for p_start, p_end in pauses):
            continue
        times = readings.get(metric, ())
        first = bisect_left(times, start)
        filled = first < len(times) and times[first] < deadline
        tally = tallies.get(metric, Tally())
        tallies[metric] = Tally(tally.scheduled + 1, tally.on_time + int(filled))
    return tallies
