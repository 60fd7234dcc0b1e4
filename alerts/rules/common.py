"""What every rule shares: the age, delay and currency of the data a finding rests on, pauses,
and which readings a rule may use."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from alerts.models import CitizenContext, EventView, Finding, ReadingView, Severity, is_current
from alerts.plans import LOCAL
from devices.catalogue import METRICS

Item = ReadingView | EventView


def age_s(measured_at: datetime, now: datetime) -> float:
    """Seconds since the measurement (0 for a device clock ahead of ours)."""
    return max(0.0, (now - measured_at).total_seconds())


def local_date(at: datetime) -> date:
    return at.astimezone(LOCAL).date()


def finding_about(item: Item, ctx: CitizenContext, now: datetime, *, rule: str,
                  severity: Severity, summary: str, explanation: dict[str, Any],
                  occurrence: str | None = None, holdable: bool = True,
                  threshold_id: int | None = None,
                  threshold_version: int | None = None) -> Finding:
    """A finding that rests on one reading or event: its age, delay cause and currency, and
    held when it was measured during a pause."""
    current = is_current(item.measured_at, item.late, item.delay_cause, now)
    explanation = {**explanation, "measured_at": item.measured_at.isoformat(),
                   "device_id": item.device_id, "late": item.late,
                   "delay_cause": item.delay_cause, "clock_suspect": item.clock_suspect}
    if not current:
        summary = f"{summary} (old data: measured {_ago(age_s(item.measured_at, now))} ago" + (
            f", delayed by {item.delay_cause})" if item.delay_cause else ")")
    return Finding(rule=rule, severity=severity, occurrence=occurrence or item.occurrence,
                   measured_at=item.measured_at, summary=summary, explanation=explanation,
                   is_current=current, data_age_s=age_s(item.measured_at, now),
                   delay_cause=item.delay_cause, threshold_id=threshold_id,
                   threshold_version=threshold_version,
                   held=holdable and ctx.paused_at(item.measured_at))


def _ago(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def display(metric: str) -> str:
    known = METRICS.get(metric)
    return known.display if known else metric


def unit(metric: str) -> str:
    known = METRICS.get(metric)
    return known.ucum if known else ""


def overlaps_pause(ctx: CitizenContext, start: datetime, end: datetime) -> bool:
    """Whether any pause overlaps [start, end)."""
    return any(p_start < end and (p_end is None or start < p_end) for p_start, p_end in ctx.pauses)


# How much history a context must hold: the weight-gain window (3 days) and the missed windows
# of a measurement taken once a day for the care team to hear of (two), plus a day's margin.
LOOKBACK = timedelta(days=4)
