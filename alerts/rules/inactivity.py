"""Inactivity of a frail citizen living alone with a motion sensor: no motion from the plan's
start until its time of day (e.g. 04:00-10:00 local), or, in the day, no motion for the plan's
quiet limit since the last one. Red: she may be on the floor. Not evaluated during a pause (she
is away) nor while the motion sensor is offline (device_offline says so instead)."""

from __future__ import annotations

from datetime import date, datetime, time

from alerts.models import CitizenContext, EventView, Finding, Severity, is_current
from alerts.plans import LOCAL, Inactivity, Monitoring
from alerts.rules.common import age_s, local_date, overlaps_pause
from alerts.rules.silence import offline_since

MOTION = "motion"


def _at(day: date, moment: time) -> datetime:
    return datetime.combine(day, moment, LOCAL)


def _finding(occurrence: str, deadline: datetime, summary: str, last: EventView | None,
             now: datetime, explanation: dict[str, object]) -> Finding:
    return Finding(rule="inactivity", severity=Severity.RED, occurrence=occurrence,
                   measured_at=deadline, summary=summary,
                   explanation={**explanation, "last_motion": last.measured_at.isoformat()
                                if last else None},
                   is_current=is_current(deadline, False, None, now),
                   data_age_s=age_s(last.measured_at, now) if last else None)


def _day(ctx: CitizenContext, plan: Inactivity, day: date, motions: list[EventView],
         now: datetime) -> list[Finding]:
    start, by, end = _at(day, plan.start), _at(day, plan.by), _at(day, plan.day_end)
    findings = []
    today = [e for e in motions if start <= e.measured_at]
    before = [e for e in motions if e.measured_at < by]
    last_before = before[-1] if before else None
    if now >= by and not [e for e in today if e.measured_at < by] \
            and not overlaps_pause(ctx, start, by):
        findings.append(_finding(
            f"{day.isoformat()}:morning", by,
            f"No motion seen between {plan.start:%H:%M} and {plan.by:%H:%M} on {day.isoformat()}",
            last_before, now, {"day": day.isoformat(), "check": "morning",
                               "from": start.isoformat(), "by": by.isoformat()}))
    if plan.max_quiet is not None and today:
        # The quiet of the day counts from `by` at the earliest (a night trip at 04:00 and a
        # lie-in are the morning check's business).
        last = today[-1]
        deadline = max(last.measured_at, by) + plan.max_quiet
        if deadline <= now and deadline <= end and not overlaps_pause(ctx, by, deadline):
            hours = plan.max_quiet.total_seconds() / 3600
            findings.append(_finding(
                f"{day.isoformat()}:quiet:{last.measured_at.isoformat()}", deadline,
                f"No motion for {hours:g} h since {last.measured_at.astimezone(LOCAL):%H:%M}",
                last, now, {"day": day.isoformat(), "check": "daytime_quiet",
                            "max_quiet_s": plan.max_quiet.total_seconds(),
                            "until": end.isoformat()}))
    return findings


def evaluate(ctx: CitizenContext, monitoring: Monitoring, now: datetime) -> list[Finding]:
    """Inactivity findings for today (local)."""
    plan = monitoring.inactivity
    sensors = [d for d in ctx.devices if d.kind == "motion_sensor"]
    if plan is None or not sensors or ctx.paused_at(now):
        return []
    if all(offline_since(d, now, ctx) is not None for d in sensors):
        return []
    motions = sorted((e for e in ctx.events if e.kind == MOTION and e.measured_at <= now),
                     key=lambda e: (e.measured_at, e.seq))
    # Today only: both checks end by day_end, before midnight.
    return _day(ctx, plan, local_date(now), motions, now)
