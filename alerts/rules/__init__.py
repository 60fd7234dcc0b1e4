"""The alert rules: pure functions of a citizen's context and the time, returning findings.

`evaluate_new` runs the rules driven by new readings and events (threshold, implausible values,
weight gain, rate of change, NEWS2, emergency button, questionnaire, personal baselines);
`evaluate_tick` runs the time-driven ones (missed measurements, device silence, inactivity, a
morning without motion long past her usual first motion). Both are deterministic: the
same context and time give the same findings with the same occurrences."""

from __future__ import annotations

import logging
from datetime import datetime

from alerts.models import CitizenContext, Finding
from alerts.plans import (
    INACTIVITY,
    MISSED,
    NEWS2,
    NOT_MEASURING,
    WEIGHT_GAIN,
    Monitoring,
    default_thresholds,
    monitoring,
)
from alerts.rules import anomaly, events, inactivity, news2, schedule, silence, threshold, trend
from alerts.rules.common import LOOKBACK
from alerts.rules.silence import DEAD_LETTER_WINDOW, HEARTBEAT

__all__ = ["DEAD_LETTER_WINDOW", "HEARTBEAT", "LOOKBACK", "evaluate_new", "evaluate_tick"]

log = logging.getLogger(__name__)


def _monitoring(ctx: CitizenContext) -> Monitoring:
    watched = monitoring(ctx.plans, ctx.plan_settings)
    if watched.invalid_settings:
        log.warning("citizen %s: invalid plan settings of %s, template defaults used",
                    ctx.citizen_id, ",".join(watched.invalid_settings))
    return watched


def evaluate_new(ctx: CitizenContext, now: datetime) -> list[Finding]:
    """Findings about ctx.new_readings and ctx.new_events (ctx.readings/events as history)."""
    watched = _monitoring(ctx)
    # The plans' defaults under the citizen's own versions: a metric without a row is version 0.
    thresholds = {**default_thresholds(ctx.plans), **ctx.thresholds}
    findings = threshold.evaluate(ctx, thresholds, now)
    if WEIGHT_GAIN in watched.rules and watched.weight_gain is not None:
        findings += trend.weight_gain(ctx, watched.weight_gain, now)
    for rule in watched.rates:
        findings += trend.rate_of_change(ctx, rule, now)
    if NEWS2 in watched.rules and watched.news2_scale is not None:
        findings += news2.evaluate(ctx, watched.news2_scale, now)
    findings += events.evaluate(ctx, now)
    findings += anomaly.evaluate_new(ctx, now)
    return findings


def evaluate_tick(ctx: CitizenContext, now: datetime) -> list[Finding]:
    """Time-driven findings (and clears of condition rules) for one citizen at `now`."""
    watched = _monitoring(ctx)
    findings: list[Finding] = []
    windows = schedule.decided(ctx, watched, now)
    if MISSED in watched.rules:
        findings += schedule.missed(ctx, watched, now, windows)
    rules = ["device_offline", "battery_low", "invalid_payloads"]
    if NOT_MEASURING in watched.rules:
        rules.append("not_measuring")
    findings += silence.evaluate(ctx, watched, now, rules, windows)
    if INACTIVITY in watched.rules:
        findings += inactivity.evaluate(ctx, watched, now)
    findings += anomaly.late_morning(ctx, now)
    return findings
