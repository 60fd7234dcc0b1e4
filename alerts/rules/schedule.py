"""Missed measurements: a scheduled measurement not taken within its daily window plus grace.
One occurrence per metric, local date and window. A window overlapping a pause, or before the
plan started, is not counted. Any reading of the metric measured in the window counts (an
implausible one too: the citizen did measure; the threshold rule reports the value).

A missed window first reminds the citizen on her home screen; the care team is told when the
measurement is missed `alert_after` windows in a row (by default the second: a nurse's first
step would be the same reminder, and one forgotten morning is not news for her)."""

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
    alert_after: int

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
                                  scheduled.grace, scheduled.alert_after))
    return sorted(found, key=lambda s: s.start)


def decided(ctx: CitizenContext, monitoring: Monitoring, now: datetime) -> dict[str, list[Slot]]:
    """The decided windows of every scheduled metric, oldest first (computed once per tick)."""
    per_metric: dict[str, list[Slot]] = {}
    for scheduled in monitoring.measurements:
        per_metric.setdefault(scheduled.metric, []).extend(
            slots(ctx, scheduled, now, monitoring.valid_from))
    return {metric: sorted(found, key=lambda s: (s.start, s.window.start))
            for metric, found in sorted(per_metric.items())}


def _missed(slot: Slot, in_a_row: int, now: datetime) -> Finding:
    # Not about data: no age. Found more than STALE_AFTER after its deadline (the engine was
    # down) it is old news, shown but not pushed.
    return Finding(
        rule=f"missed:{slot.metric}", severity=Severity.YELLOW, occurrence=slot.occurrence,
        measured_at=slot.deadline,
        summary=(f"{display(slot.metric)} not measured on {slot.day.isoformat()} "
                 f"between {slot.window.label} (local time), {in_a_row} windows in a row"),
        explanation={"metric": slot.metric, "day": slot.day.isoformat(),
                     "window": slot.window.label, "grace_s": slot.grace.total_seconds(),
                     "start": slot.start.isoformat(), "deadline": slot.deadline.isoformat(),
                     "in_a_row": in_a_row},
        is_current=is_current(slot.deadline, False, None, now), self_resolving=True)


def _reminder(ctx: CitizenContext, slot: Slot, now: datetime) -> Finding:
    # Only a current one is sent: a reminder found late (the engine was down) is no use to her.
    return Finding(
        rule=f"missed:{slot.metric}", severity=Severity.YELLOW,
        occurrence=f"remind:{slot.occurrence}", measured_at=slot.deadline,
        summary=f"Reminder: {display(slot.metric)} not measured between {slot.window.label}",
        explanation={"metric": slot.metric, "day": slot.day.isoformat(),
                     "window": slot.window.label},
        is_current=is_current(slot.deadline, False, None, now), held=ctx.paused_at(now),
        reminder=True)


def _clear(slot: Slot) -> Finding:
    assert slot.reading is not None
    return Finding(rule=f"missed:{slot.metric}", severity=Severity.YELLOW,
                   occurrence=f"clear:{slot.occurrence}", measured_at=slot.reading.measured_at,
                   summary=f"{display(slot.metric)} measured again", self_resolving=True,
                   clears=True, explanation={"metric": slot.metric, "window": slot.window.label,
                                             "day": slot.day.isoformat()})


def missed(ctx: CitizenContext, monitoring: Monitoring, now: datetime,
           windows: Mapping[str, list[Slot]] | None = None) -> list[Finding]:
    """Per metric: a reminder of the latest window when it was missed, and the misses since the
    last filled window from the `alert_after`th on; a clear if the latest window is filled."""
    findings: list[Finding] = []
    windows = decided(ctx, monitoring, now) if windows is None else windows
    for found in windows.values():
        if not found:
            continue
        if not found[-1].missed:
            findings.append(_clear(found[-1]))
            continue
        streak: list[Slot] = []
        for slot in reversed(found):
            if not slot.missed:
                break
            streak.insert(0, slot)
        findings.append(_reminder(ctx, streak[-1], now))
        findings.extend(_missed(slot, in_a_row, now)
                        for in_a_row, slot in enumerate(streak, start=1)
                        if in_a_row >= streak[-1].alert_after)
    return findings
