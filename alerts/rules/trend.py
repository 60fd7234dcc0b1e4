"""Trend rules: heart-failure weight gain (more than 2 kg within 3 days against the lowest
weight in that window, ESC) and general rate-of-change rules (a change against the mean of
a metric's readings within a window before the new one). Implausible readings take no part."""

from __future__ import annotations

from datetime import datetime, timedelta

from alerts.models import CitizenContext, Finding, ReadingView, Series, Severity
from alerts.plans import RateRule, WeightGain
from alerts.rules.common import display, finding_about, unit
from devices.catalogue import IMPLAUSIBLE


def _lowest(history: Series, reading: ReadingView, within: timedelta) -> tuple[ReadingView, int]:
    """The lowest (then earliest) reading within `within` up to `reading`, and how many there
    are; `reading` itself when there are none. On the values list: the rule asks once per new
    weight, and a window of a scale that sends often is long."""
    lo, hi = history.span(reading.measured_at - within, reading.measured_at)
    if hi == lo:
        return reading, 1
    low = min(history.values[lo:hi])
    # The series is in time order: the first index of the lowest value is the earliest.
    return history.readings[history.values.index(low, lo, hi)], hi - lo


def weight_gain(ctx: CitizenContext, gain: WeightGain, now: datetime) -> list[Finding]:
    """A yellow finding for each new weight more than `gain.kg` above the window's lowest."""
    history = ctx.series("body_weight")
    findings = []
    for reading in ctx.new_readings:
        if reading.metric != "body_weight" or reading.quality == IMPLAUSIBLE:
            continue
        lowest, readings = _lowest(history, reading, gain.within)
        # Rounded to grams: 81.3 - 79.3 must be 2.0, not a hair above it.
        change = round(reading.value - lowest.value, 3)
        if change <= gain.kg:
            continue
        days = gain.within.total_seconds() / 86400
        findings.append(finding_about(
            reading, ctx, now, rule="trend:weight_gain", severity=Severity.YELLOW,
            summary=(f"Weight up {change:.1f} kg within {days:g} days "
                     f"({lowest.value:g} -> {reading.value:g} kg; limit {gain.kg:g} kg)"),
            explanation={"metric": "body_weight", "value": reading.value, "gain_kg": round(change, 3),
                         "limit_kg": gain.kg, "within_days": days, "lowest": lowest.value,
                         "lowest_at": lowest.measured_at.isoformat(),
                         "readings": readings}))
    return findings


def rate_of_change(ctx: CitizenContext, rule: RateRule, now: datetime) -> list[Finding]:
    """Findings for new readings that moved by `rule.change` or more against the mean of the
    earlier readings within `rule.within` (at least `rule.min_readings` of them): a mean, not
    the extreme, because one noisy home reading must not be the reference."""
    history = ctx.series(rule.metric)
    findings = []
    for reading in ctx.new_readings:
        if reading.metric != rule.metric or reading.quality == IMPLAUSIBLE:
            continue
        lo, hi = history.span(reading.measured_at - rule.within, reading.measured_at,
                              include_end=False)
        if hi - lo < rule.min_readings:
            continue
        reference = sum(history.values[lo:hi]) / (hi - lo)
        change = round(reading.value - reference, 3)
        falling = rule.change < 0
        if (change > rule.change) if falling else (change < rule.change):
            continue
        hours = rule.within.total_seconds() / 3600
        findings.append(finding_about(
            reading, ctx, now, rule=f"rate:{rule.metric}", severity=rule.severity,
            summary=(f"{display(rule.metric)} {reading.value:g} {unit(rule.metric)}: "
                     f"{'down' if falling else 'up'} {abs(change):g} against the mean "
                     f"{reference:.1f} of the last {hours:g} h"),
            explanation={"metric": rule.metric, "value": reading.value, "change": change,
                         "limit": rule.change, "within_h": hours,
                         "reference_mean": round(reference, 3), "reference_readings": hi - lo,
                         "source": rule.source}))
    return findings
