"""The alert rules: pure functions of a citizen's context and the time, returning findings.

`evaluate_new` runs the rules driven by new readings and events (threshold, implausible values,
weight gain, rate of change, NEWS2, emergency button, questionnaire, personal baselines);
`evaluate_tick` runs the time-driven ones (missed measurements, device silence, inactivity, a
morning without motion long past her usual first motion). Both are deterministic: the
same context and time give the same findings with the same occurrences."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

from alerts.models import CitizenContext, Finding, Severity
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
from alerts.rules import (
    anomaly,
    events,
    guard,
    inactivity,
    news2,
    schedule,
    silence,
    threshold,
    trend,
)
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
    """Findings about ctx.new_readings and ctx.new_events (ctx.readings/events as history),
    each rule under the guard (alerts/rules/guard.py)."""
    watched = _monitoring(ctx)
    # The plans' defaults under the citizen's own versions: a metric without a row is version 0.
    thresholds = {**default_thresholds(ctx.plans), **ctx.thresholds}
    rules: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("threshold", lambda: threshold.evaluate(ctx, thresholds, now))]
    # A rate rule's severity is its own (a plan may make one red).
    rates_worst = (Severity.RED if any(r.severity is Severity.RED for r in watched.rates)
                   else Severity.YELLOW)
    if WEIGHT_GAIN in watched.rules and watched.weight_gain is not None:
        weight_gain = watched.weight_gain
        rules.append(("weight_gain", lambda: trend.weight_gain(ctx, weight_gain, now)))
    if watched.rates:
        rules.append(("rate", lambda: [f for rule in watched.rates
                                       for f in trend.rate_of_change(ctx, rule, now)]))
    if NEWS2 in watched.rules and watched.news2_scale is not None:
        scale = watched.news2_scale
        rules.append(("news2", lambda: news2.evaluate(ctx, scale, now)))
    rules += [("events", lambda: events.evaluate(ctx, now)),
              ("anomaly", lambda: anomaly.evaluate_new(ctx, now))]
    return [f for name, rule in rules
            for f in guard.run(ctx, now, name, rule, tick=False,
                               worst=rates_worst if name == "rate" else None)]


def evaluate_tick(ctx: CitizenContext, now: datetime) -> list[Finding]:
    """Time-driven findings (and clears of condition rules) for one citizen at `now`, each
    rule under the guard."""
    watched = _monitoring(ctx)
    rules: list[tuple[str, Callable[[], list[Finding]]]] = []
    if MISSED in watched.rules or NOT_MEASURING in watched.rules:
        rules.append(("missed", lambda: schedule.missed(ctx, watched, now)))
    rules += [(kind, partial(silence.evaluate, ctx, now, [kind]))
              for kind in ("device_offline", "battery_low", "invalid_payloads")]
    if INACTIVITY in watched.rules:
        rules.append(("inactivity", lambda: inactivity.evaluate(ctx, watched, now)))
    rules.append(("first_motion", lambda: anomaly.late_morning(ctx, now)))
    return [f for name, rule in rules for f in guard.run(ctx, now, name, rule, tick=True)]
