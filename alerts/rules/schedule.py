"""Missed measurements: a scheduled measurement not taken within its daily window plus grace.
One occurrence per metric, local date and window. A window overlapping a pause, or before the
plan started, is not counted. Any reading of the metric measured in the window counts (an
implausible one too: the citizen did measure; the threshold rule reports the value).

A missed window first reminds the citizen on her home screen; the care team is told when the
measurement is missed `alert_after` windows in a row (by default a day's windows, at least
two: a nurse's first step would be the same reminder, and one forgotten morning is not news
for her). Told as one of two kinds of silence: `not_measuring` when a device measuring it was
online all along, else `missed:<metric>` (no device, or one that went quiet: device_offline
says which)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from alerts.models import CitizenContext, DeviceState, Finding, ReadingView, Severity, is_current
from alerts.plans import MISSED, NOT_MEASURING, Monitoring, Scheduled, Window
from alerts.rules.common import LOOKBACK, display, local_date, overlaps_pause
from alerts.rules.silence import measures, online_through


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
                                  scheduled.grace, scheduled.told_after))
    return sorted(found, key=lambda s: s.start)


def decided(ctx: CitizenContext, monitoring: Monitoring, now: datetime) -> dict[str, list[Slot]]:
    """The decided windows of every scheduled metric, oldest first."""
    per_metric: dict[str, list[Slot]] = {}
    for scheduled in monitoring.measurements:
        per_metric.setdefault(scheduled.metric, []).extend(
            slots(ctx, scheduled, now, monitoring.valid_from))
    return {metric: sorted(found, key=lambda s: (s.start, s.window.start))
            for metric, found in sorted(per_metric.items())}


def _missed(ctx: CitizenContext, slot: Slot, in_a_row: int, online: Sequence[DeviceState],
            now: datetime) -> Finding:
    # Not about data: no age. Found more than STALE_AFTER after its deadline (the engine was
    # down) it is old news, shown but not pushed.
    why = f"although {online[0].device_id} is online" if online else "(local time)"
    return Finding(
        rule="not_measuring" if online else f"missed:{slot.metric}", severity=Severity.YELLOW,
        occurrence=slot.occurrence, measured_at=slot.deadline,
        summary=(f"{display(slot.metric)} not measured on {slot.day.isoformat()} between "
                 f"{slot.window.label}, {in_a_row} windows in a row {why}"),
        explanation={"metric": slot.metric, "day": slot.day.isoformat(),
                     "window": slot.window.label, "grace_s": slot.grace.total_seconds(),
                     "start": slot.start.isoformat(), "deadline": slot.deadline.isoformat(),
                     "in_a_row": in_a_row,
                     "devices_online": sorted(d.device_id for d in online)},
        is_current=is_current(slot.deadline, False, None, now), self_resolving=True,
        held=ctx.paused_at(now))


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


def _run(found: Sequence[Slot]) -> list[Slot]:
    """The missed windows since the last filled one, oldest first."""
    run: list[Slot] = []
    for slot in reversed(found):
        if not slot.missed:
            break
        run.insert(0, slot)
    return run


def _online(ctx: CitizenContext, run: Sequence[Slot], now: datetime) -> list[DeviceState]:
    """The citizen's devices measuring the run's metric and online since it began."""
    return [device for device in ctx.devices if measures(device, run[0].metric)
            and online_through(device, run[0].start, now, ctx)]


def missed(ctx: CitizenContext, monitoring: Monitoring, now: datetime) -> list[Finding]:
    """Per metric: a reminder of the latest window when it was missed; from the `alert_after`th
    missed window in a row on, a finding per window for the care team: `not_measuring` when a
    device measuring it has been online all along (she has what she needs and does not
    measure), else `missed:<metric>`. Clears: `missed:<metric>` when its latest window is
    filled, `not_measuring` when no metric is in such a run."""
    findings: list[Finding] = []
    not_measuring = NOT_MEASURING in monitoring.rules
    silent = False
    for found in decided(ctx, monitoring, now).values():
        run = _run(found)
        if not run:
            if found:
                findings.append(_clear(found[-1]))
            continue
        findings.append(_reminder(ctx, run[-1], now))
        if len(run) < run[-1].alert_after:
            continue
        online = _online(ctx, run, now) if not_measuring else []
        if not online and MISSED not in monitoring.rules:
            continue
        silent = silent or bool(online)
        findings.extend(_missed(ctx, slot, in_a_row, online, now)
                        for in_a_row, slot in enumerate(run, start=1)
                        if in_a_row >= run[-1].alert_after)
    if not_measuring and not silent:
        findings.append(Finding(rule="not_measuring", severity=Severity.YELLOW,
                                occurrence=f"clear:{now.isoformat()}", measured_at=now,
                                summary="condition cleared", self_resolving=True, clears=True))
    return findings
