"""Personal-baseline rules: a new reading (or, for SpO2 with pulse, the pair) that is rare for
this citizen against her own baseline, and a morning without motion long past her usual first
motion. Yellow for readings (look today: it is unusual for her, not necessarily dangerous; the
threshold rules say when it is), red for the missing morning (she may be on the floor, as the
fixed inactivity rule says).

A baseline still in its learning period scores nothing, so it raises nothing. A reading measured
before the baseline's last training point is not scored (the baseline may have learnt it, and the
short windows have moved on): the threshold and trend rules still see it."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from datetime import datetime, timedelta

from alerts.baselines import (
    FALLING_ONLY,
    FIRST_MOTION,
    SPO2_PULSE,
    SPO2_PULSE_PARTS,
    first_motion_points,
    hours_into_morning,
    local,
    morning_start,
    next_morning,
    series_of,
    spo2_pulse_points,
)
from alerts.models import CitizenContext, EventView, Finding, ReadingView, Series, Severity
from alerts.rules.common import display, finding_about, unit
from alerts.rules.silence import offline_since
from anomaly.baseline import Baseline, Point
from anomaly.detector import Explanation
from devices.catalogue import IMPLAUSIBLE

# A warning limit at the top of a citizen's own normal raises a yellow alert every few days about
# nothing: a treated hypertensive who lives at 148-165 mmHg against the 159 limit, whose nurse
# would move her limit. A yellow reading above a plan's default high warning limit of blood
# pressure (MOVABLE) is not raised when her usual value lies at most USUAL_LIMIT_SPREADS below
# that limit (not above it: a citizen whose usual is over the limit is uncontrolled, and her
# nurse must see it) and the reading is typical for her: within USUAL_SPREADS of her usual value,
# so at most one spread over the limit. A looser first version (any metric, low limits too, two
# spreads), tried on the development seed, saved 0.23 non-actionable alerts per citizen-week but
# no longer caught 3 of 29 blood-pressure rises 24 h ahead (2 not at all). Never moved: a low
# limit (SpO2, hypotension, hypoglycaemia), glucose (over 13.9 mmol/L means check for
# ketoacidosis), a limit with no red band behind it, a limit her nurse set or proposes; red is
# always raised, and a baseline that is still learning changes nothing.
MOVABLE = frozenset({"systolic_bp", "diastolic_bp"})
USUAL_LIMIT_SPREADS = 1.0
USUAL_SPREADS = 1.0

# A score of 0.5 is the detector's alarm level (its surprise at alarm_surprise): the one
# configuration NAB is scored with.
ALARM_SCORE = 0.5


# At most this many of her points since training bring the short windows up to date: the means
# look at the last 16 values and the changes at the last 32, and a citizen whose oximeter sends
# every second must not cost a rule four days of points per reading. (The rhythm slot of the
# reading then misses older points since training: it is a month of values in any case.)
SINCE_MAX = 48


_TICK = timedelta(microseconds=1)


def _recent(series: Series, after: datetime | None, before: datetime) -> list[ReadingView]:
    """The last SINCE_MAX readings of `series` measured after `after` and before `before`."""
    hi = bisect_left(series.times, before, series.lo, series.hi)
    lo = series.lo if after is None else bisect_right(series.times, after, series.lo, hi)
    return series.readings[max(lo, hi - SINCE_MAX):hi]


def _explanation(baseline: Baseline, series: str, value: float, score: float,
                 why: Explanation) -> dict[str, object]:
    usual = baseline.value_feature()
    return {"series": series, "value": value, "score": round(score, 4), "feature": why.feature,
            "observed": why.observed, "baseline": why.baseline, "spread": why.spread,
            "deviation": round(why.deviation, 3), "surprise": round(why.surprise, 3),
            "usual": usual[0] if usual else None, "usual_spread": usual[1] if usual else None,
            "trained_at": baseline.trained_at.isoformat(), "training_rows": baseline.rows}


def _scored(baseline: Baseline, at: datetime, value: float, since: list[Point]
            ) -> tuple[float, Explanation] | None:
    """The score of `value` at `at` after the points `since` training, when it is an alarm."""
    if baseline.trained_through is not None and at <= baseline.trained_through:
        return None
    scored = baseline.score(local(at), value, since)
    if scored is None or scored[0] < ALARM_SCORE:
        return None
    return scored


def _reading_finding(ctx: CitizenContext, reading: ReadingView, series: str, value: float,
                     scored: tuple[float, Explanation], baseline: Baseline,
                     now: datetime) -> Finding:
    score, why = scored
    usual = baseline.value_feature()
    told = (f"{display(reading.metric)} {reading.value:g} {unit(reading.metric)}"
            if series != SPO2_PULSE else "SpO2 down with pulse up")
    normal = f"; her usual {usual[0]:.4g} ± {usual[1]:.2g}" if usual and series != SPO2_PULSE else ""
    return finding_about(
        reading, ctx, now, rule=f"anomaly:{series}", severity=Severity.YELLOW,
        summary=f"{told}: unusual for her ({why.feature}, {why.deviation:+.1f} spreads{normal})",
        explanation=_explanation(baseline, series, value, score, why))


def _metric_findings(ctx: CitizenContext, baselines: Mapping[str, Baseline],
                     now: datetime) -> list[Finding]:
    findings = []
    for reading in ctx.new_readings:
        baseline = baselines.get(reading.metric)
        if baseline is None or reading.quality == IMPLAUSIBLE:
            continue
        usual = baseline.value_feature()
        if reading.metric in FALLING_ONLY and usual is not None and reading.value >= usual[0]:
            continue
        since = _recent(ctx.series(reading.metric), baseline.trained_through, reading.measured_at)
        scored = _scored(baseline, reading.measured_at, reading.value,
                         [(local(r.measured_at), r.value) for r in since])
        if scored is not None:
            findings.append(_reading_finding(ctx, reading, reading.metric, reading.value, scored,
                                             baseline, now))
    return findings


def _pairs(ctx: CitizenContext, spo2: list[ReadingView], parts: dict[str, tuple[float, float]]
           ) -> list[Point]:
    """spo2_pulse points of these SpO2 readings (those with a pulse of the same measurement)."""
    if not spo2:
        return []
    pulse = ctx.series("pulse_rate")
    lo, hi = pulse.span(spo2[0].measured_at, spo2[-1].measured_at)
    return spo2_pulse_points([*spo2, *pulse.readings[lo:hi]], parts)


def _pair_findings(ctx: CitizenContext, baselines: Mapping[str, Baseline],
                   now: datetime) -> list[Finding]:
    baseline = baselines.get(SPO2_PULSE)
    usual = baseline.value_feature() if baseline is not None else None
    if baseline is None or baseline.parameters is None or usual is None:
        return []
    parts = {metric: (float(c), float(s)) for metric, (c, s) in baseline.parameters.items()}
    series = ctx.series(SPO2_PULSE_PARTS[-1][0])  # one finding per pair: about its SpO2 reading
    findings = []
    for reading in ctx.new_readings:
        if reading.metric != SPO2_PULSE_PARTS[-1][0] or reading.quality == IMPLAUSIBLE:
            continue
        now_pair = _pairs(ctx, [reading], parts)
        # One-sided: SpO2 up with pulse down is no exacerbation.
        if not now_pair or now_pair[0][1] <= usual[0]:
            continue
        since = _pairs(ctx, _recent(series, baseline.trained_through, reading.measured_at), parts)
        scored = _scored(baseline, reading.measured_at, now_pair[0][1], since)
        if scored is not None:
            findings.append(_reading_finding(ctx, reading, SPO2_PULSE, now_pair[0][1], scored,
                                             baseline, now))
    return findings


def _in_plans(ctx: CitizenContext) -> dict[str, Baseline]:
    """The baselines of the series her plans in force learn (a plan that ended raises none)."""
    learnt = series_of(ctx.plans)
    return {series: b for series, b in ctx.baselines.items() if series in learnt}


def evaluate_new(ctx: CitizenContext, now: datetime) -> list[Finding]:
    """Findings about new readings that are rare against the citizen's own baselines."""
    baselines = _in_plans(ctx) if ctx.baselines else {}
    if not baselines:
        return []
    return _metric_findings(ctx, baselines, now) + _pair_findings(ctx, baselines, now)


def usual_for_her(ctx: CitizenContext, metric: str, value: float,
                  limit: float) -> tuple[float, float] | None:
    """Her usual value and spread when the high warning `limit` of a MOVABLE metric sits at the
    top of her own normal and `value` is typical for her; None otherwise."""
    baseline = _in_plans(ctx).get(metric) if ctx.baselines and metric in MOVABLE else None
    usual = baseline.value_feature() if baseline is not None else None
    if usual is None:
        return None
    centre, spread = usual
    near = limit - USUAL_LIMIT_SPREADS * spread <= centre <= limit
    return usual if near and abs(value - centre) <= USUAL_SPREADS * spread else None


def _events_between(ctx: CitizenContext, after: datetime | None, before: datetime
                    ) -> tuple[EventView, ...]:
    """The context's events measured after `after` (None: all) and before `before` (events are
    in time order: two bisections, not a walk through four days of sensor events each tick)."""
    lo = 0 if after is None else bisect_right(ctx.events, after, key=lambda e: e.measured_at)
    return ctx.events[lo:bisect_left(ctx.events, before, key=lambda e: e.measured_at)]


def late_morning(ctx: CitizenContext, now: datetime) -> list[Finding]:
    """No motion this morning although her first motion is by now rare for her (red)."""
    baseline = _in_plans(ctx).get(FIRST_MOTION) if ctx.baselines else None
    usual = baseline.value_feature() if baseline is not None else None
    start = morning_start(now)
    hours = hours_into_morning(now)
    if baseline is None or usual is None or now <= start or hours <= usual[0]:
        return []
    sensors = [d for d in ctx.devices if d.kind == "motion_sensor"]
    if not sensors or ctx.paused_at(now):
        return []
    if all(offline_since(d, now, ctx) is not None for d in sensors):
        return []
    if any(e.kind == "motion" for e in _events_between(ctx, start - _TICK, now + _TICK)):
        return []
    # The mornings after the last one learnt (its later motions are not a first motion).
    after = (next_morning(baseline.trained_through) - _TICK
             if baseline.trained_through is not None else None)
    since = first_motion_points(_events_between(ctx, after, start))
    scored = _scored(baseline, now, hours, since)
    if scored is None:
        return []
    score, why = scored
    day = local(now).date().isoformat()
    return [Finding(
        rule=f"anomaly:{FIRST_MOTION}", severity=Severity.RED, occurrence=f"{day}:first_motion",
        measured_at=now, data_age_s=0.0,
        summary=(f"No motion yet at {local(now):%H:%M}; her first motion is usually about "
                 f"{_clock(usual[0])} (± {usual[1] * 60:.0f} min)"),
        explanation={**_explanation(baseline, FIRST_MOTION, hours, score, why), "day": day})]


def _clock(hours_after_four: float) -> str:
    minutes = round((4 + hours_after_four) * 60)
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"
