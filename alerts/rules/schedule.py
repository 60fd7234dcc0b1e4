"""Missed measurements: a scheduled measurement not taken within its daily window plus grace.
One occurrence per metric, local date and window. A window overlapping a pause, or before the
plan started, is not counted. Any reading of the metric measured in the window counts (an
implausible one too: the citizen did measure; the threshold rule reports the value)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from alerts.models import CitizenContext, Finding, ReadingView, Severity, is_current
from alerts.plans import Monitoring, Scheduled, Window
from alerts.rules.common import LOOKBACK, display, local_date, overlaps_pause


@dataclass(frozen=True)
class Slot:
    """One window of one scheduled metric on one local day, and the reading that filled it."""

    metric: str
    day: date
    window: Window
    start: datetime
    deadline: datetime
    reading: ReadingView | None
    grace: timedelta

    @property
    def occurrence(self) -> str:
        return f"{self.metric}:{self.day.isoformat()}:{self.window.label}"

    @property
    def missed(self) -> bool:
        return self.reading is None


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = local_date(start), local_date(end)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def slots(ctx: CitizenContext, scheduled: Scheduled, now: datetime, plan_start: datetime | None,
          lookback: timedelta = LOOKBACK) -> list[Slot]:
    """The decided windows of one measurement within `lookback`, oldest first: those whose
    deadline has passed, and those already filled. Paused ones and those before the plan
    started are left out."""
    taken = sorted((r for r in ctx.readings if r.metric == scheduled.metric and r.measured_at <= now),
                   key=lambda r: (r.measured_at, r.seq))
    times = [r.measured_at for r in taken]
    found = []
    for day in _days(now - lookback, now):
        for window in scheduled.windows:
            start, end = window.on(day)
            deadline = end + scheduled.grace
            if start < now - lookback or (plan_start is not None and start < plan_start):
                continue
            if overlaps_pause(ctx, start, deadline):
                continue
            first = bisect_left(times, start)
            reading = taken[first] if first < len(taken) and times[first] < deadline else None
            if deadline <= now or reading is not None:
                found.append(Slot(scheduled.metric, day, window, start, deadline, reading,
                                  scheduled.grace))
    return sorted(found, key=lambda s: s.start)


def decided(ctx: CitizenContext, monitoring: Monitoring, now: datetime) -> dict[str, list[Slot]]:
    """The decided windows of every scheduled metric, oldest first (computed once per tick)."""
    per_metric: dict[str, list[Slot]] = {}
    for scheduled in monitoring.measurements:
        per_metric.setdefault(scheduled.metric, []).extend(
            slots(ctx, scheduled, now, monitoring.valid_from))
    return {metric: sorted(found, key=lambda s: (s.start, s.window.start))
            for metric, found in sorted(per_metric.items())}


def _missed(slot: Slot, now: datetime) -> Finding:
    # Not about data: no age. Found more than STALE_AFTER after its deadline (the engine was
    # down) it is old news, shown but not pushed.
    return Finding(
        rule=f"missed:{slot.metric}", severity=Severity.YELLOW, occurrence=slot.occurrence,
        measured_at=slot.deadline,
        summary=(f"{display(slot.metric)} not measured on {slot.day.isoformat()} "
                 f"between {slot.window.label} (local time)"),
        explanation={"metric": slot.metric, "day": slot.day.isoformat(),
                     "window": slot.window.label, "grace_s": slot.grace.total_seconds(),
                     "start": slot.start.isoformat(), "deadline": slot.deadline.isoformat()},
        is_current=is_current(slot.deadline, False, None, now), self_resolving=True)


def _clear(slot: Slot) -> Finding:
    assert slot.reading is not None
    return Finding(rule=f"missed:{slot.metric}", severity=Severity.YELLOW,
                   occurrence=f"clear:{slot.occurrence}", measured_at=slot.reading.measured_at,
                   summary=f"{display(slot.metric)} measured again", self_resolving=True,
                   clears=True, explanation={"metric": slot.metric, "window": slot.window.label,
                                             "day": slot.day.isoformat()})


def missed(ctx: CitizenContext, monitoring: Monitoring, now: datetime,
           windows: Mapping[str, list[Slot]] | None = None) -> list[Finding]:
    """Per metric: the misses since its last filled window, or a clear if the latest is filled."""
    findings: list[Finding] = []
    windows = decided(ctx, monitoring, now) if windows is None else windows
    for found in windows.values():
        if not found:
            continue
        if not found[-1].missed:
            findings.append(_clear(found[-1]))
            continue
        streak = []
        for slot in reversed(found):
            if not slot.missed:
                break
            streak.append(slot)
        findings.extend(_missed(slot, now) for slot in reversed(streak))
    return findings
