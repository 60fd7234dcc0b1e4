"""Which personal baselines a citizen has, what each learns from, and what it leaves out.

A citizen's plans say which series are learnt (SERIES_BY_PLAN): her measured metrics, and two
derived series:
- `spo2_pulse` (COPD): for each oximeter measurement, how far her pulse is above its usual value
  less how far her SpO2 is above its own, each in its own robust spread: an exacerbation moves
  both (SpO2 down, pulse up), each perhaps too little on its own to be rare for her.
- `first_motion` (frail, living alone): the hours after 04:00 local of the day's first motion:
  her usual morning, learnt, instead of the plan's fixed "by 10:00".

Every baseline leaves out (anomaly/baseline.py: excluded periods) what must not become her normal:
pauses (in hospital, away) and clinical episodes, that is the span of every clinical alert from
EPISODE_LEAD before its first measurement until it was resolved, unless a nurse resolved it as
not actionable (then it was her normal after all). Device, silence and missed-measurement alerts
say nothing about her physiology and leave nothing out.

Timestamps go to the detector on the Copenhagen wall clock, so that the daily rhythm is her day's
(a measurement at 08:00 stays in the 08:00 slot across daylight saving time).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from alerts.models import EventView, ReadingView, Series
from alerts.plans import LOCAL
from anomaly.baseline import ACTIVE, Baseline, BaselineConfig, Period, Point, is_excluded, train
from devices.catalogue import IMPLAUSIBLE, parts_of

if TYPE_CHECKING:
    from alerts.context import CitizenHistory

SPO2_PULSE = "spo2_pulse"
FIRST_MOTION = "first_motion"
SERIES_BY_PLAN: Mapping[str, tuple[str, ...]] = {
    "heart_failure": ("body_weight", "pulse_rate", "systolic_bp"),
    "copd": ("spo2", "pulse_rate", "body_temperature", SPO2_PULSE),
    "diabetes": ("blood_glucose",),
    "hypertension": ("systolic_bp", "diastolic_bp", "pulse_rate"),
    "frail_alone": (FIRST_MOTION,),
}
# The smallest step of each series as home devices show it (a spread is never narrower:
# anomaly.detector.DetectorConfig.resolution); spo2_pulse is in spreads already, first_motion
# in hours (a minute).
RESOLUTION: Mapping[str, float] = {
    "spo2": 1.0, "pulse_rate": 1.0, "systolic_bp": 1.0, "diastolic_bp": 1.0,
    "body_weight": 0.1, "body_temperature": 0.1, "blood_glucose": 0.1,
    SPO2_PULSE: 0.0, FIRST_MOTION: 1 / 60,
}
# Series that are a worry in one direction only: a rise in SpO2 is good news.
FALLING_ONLY = frozenset({"spo2"})
# The components of spo2_pulse and the sign each enters with (a rise of the sum is the worry).
SPO2_PULSE_PARTS = (("pulse_rate", 1.0), ("spo2", -1.0))
# A morning begins here (the fixed inactivity rule's default start): a night trip is not it.
MORNING = time(4, 0)
# A deterioration shows before its first alert: this much before it is left out too.
EPISODE_LEAD = timedelta(days=2)
NOT_ACTIONABLE = "not_actionable"


def series_of(plans: Iterable[str]) -> tuple[str, ...]:
    """The series the citizen's plans learn, each once, in a stable order."""
    return tuple(sorted({s for plan in plans for s in SERIES_BY_PLAN.get(plan, ())}))


@dataclass(frozen=True)
class AlertSpan:
    """What of an alert decides what a baseline leaves out."""

    rule: str
    first_measured_at: datetime
    last_measured_at: datetime
    resolved_at: datetime | None
    outcome: str | None


# Rules whose name does not say the series they are about.
_RULE_SERIES: Mapping[str, tuple[str, ...]] = {
    "trend:weight_gain": ("body_weight",),
    "news2": ("spo2", "pulse_rate", "body_temperature", "systolic_bp", SPO2_PULSE),
    "anomaly:spo2_pulse": ("spo2", "pulse_rate", SPO2_PULSE),
    "inactivity": (FIRST_MOTION,), "emergency_button": (FIRST_MOTION,),
}
_METRIC_RULES = ("threshold", "anomaly", "rate")


def series_of_rule(rule: str) -> tuple[str, ...]:
    """The series an alert of `rule` is about (what an episode of it changes). A questionnaire
    answer, a device or an adherence alert is about none of them."""
    if rule in _RULE_SERIES:
        return _RULE_SERIES[rule]
    family, _, name = rule.partition(":")
    if family not in _METRIC_RULES or not name:
        return ()
    metrics = parts_of(name) if family == "threshold" else (name,)
    return metrics + ((SPO2_PULSE,) if {"spo2", "pulse_rate"} & set(metrics) else ())


def excluded_periods(alerts: Iterable[AlertSpan],
                     pauses: Iterable[tuple[datetime, datetime | None]]
                     ) -> dict[str, list[Period]]:
    """Per series: pauses, and each episode of an alert about it from EPISODE_LEAD before its
    first measurement until it was resolved (still open: until its last measurement)."""
    paused = list(pauses)
    periods: dict[str, list[Period]] = defaultdict(lambda: list(paused))
    for alert in alerts:
        if alert.outcome == NOT_ACTIONABLE:
            continue
        end = alert.resolved_at or alert.last_measured_at
        for series in series_of_rule(alert.rule):
            periods[series].append((alert.first_measured_at - EPISODE_LEAD, end))
    return periods


def local(at: datetime) -> datetime:
    return at.astimezone(LOCAL)


def metric_points(series: Series) -> list[Point]:
    """A metric's plausible readings as (local time, value)."""
    return [(local(r.measured_at), r.value) for r in series.readings[series.lo:series.hi]]


def morning_start(at: datetime) -> datetime:
    """04:00 local on the local day of `at`."""
    return datetime.combine(local(at).date(), MORNING, LOCAL)


def next_morning(at: datetime) -> datetime:
    """04:00 local on the local day after that of `at`."""
    return datetime.combine(local(at).date() + timedelta(days=1), MORNING, LOCAL)


def hours_into_morning(at: datetime) -> float:
    return (at - morning_start(at)).total_seconds() / 3600


def first_motion_points(events: Iterable[EventView]) -> list[Point]:
    """Each local day's first motion at or after 04:00, as (its time, hours after 04:00)."""
    first: dict[object, EventView] = {}
    for event in events:
        if event.kind != "motion" or event.measured_at < morning_start(event.measured_at):
            continue
        day = local(event.measured_at).date()
        if day not in first or event.measured_at < first[day].measured_at:
            first[day] = event
    return [(local(e.measured_at), hours_into_morning(e.measured_at))
            for _, e in sorted(first.items(), key=lambda item: item[1].measured_at)]


def _scale(values: Sequence[float], resolution: float) -> tuple[float, float]:
    """Median and spread (1.2533 x the mean absolute deviation from it, which is sigma for a
    normal distribution; at least the resolution): not the median absolute deviation, which is 0
    for a SpO2 that reads 95 on most days."""
    center = statistics.median(values)
    spread = 1.2533 * statistics.fmean(abs(v - center) for v in values)
    return center, max(spread, resolution, 1e-3 * max(1.0, abs(center)))


def scales(trained: Mapping[str, Baseline], metrics: Mapping[str, Series],
           excluded: Mapping[str, Sequence[Period]]) -> dict[str, tuple[float, float]] | None:
    """Each spo2_pulse component's usual value and spread over what its baseline learnt from
    (None while a component is still learning)."""
    found = {}
    for metric, _ in SPO2_PULSE_PARTS:
        baseline, series = trained.get(metric), metrics.get(metric)
        if baseline is None or baseline.status != ACTIVE or series is None:
            return None
        left_out = excluded.get(metric, ())
        kept = [v for at, v in metric_points(series) if not is_excluded(at, left_out)]
        # The points its baseline learnt from.
        found[metric] = _scale(kept[-baseline.rows:], RESOLUTION[metric])
    return found


def spo2_pulse_value(values: Mapping[str, float], parts: Mapping[str, tuple[float, float]]
                     ) -> float:
    return sum(sign * (values[metric] - parts[metric][0]) / parts[metric][1]
               for metric, sign in SPO2_PULSE_PARTS)


def spo2_pulse_points(readings: Iterable[ReadingView], parts: Mapping[str, tuple[float, float]]
                      ) -> list[Point]:
    """One point per oximeter measurement that has both components (same device, same time)."""
    by_measurement: dict[tuple[str, datetime], dict[str, float]] = {}
    for reading in readings:
        if reading.quality == IMPLAUSIBLE or reading.metric not in parts:
            continue
        by_measurement.setdefault((reading.device_id, reading.measured_at), {})[reading.metric] = (
            reading.value)
    return sorted((local(at), spo2_pulse_value(values, parts))
                  for (_, at), values in by_measurement.items() if len(values) == len(parts))


def train_citizen(series_names: Sequence[str], metrics: Mapping[str, Series],
                  readings: Sequence[ReadingView], events: Sequence[EventView],
                  excluded: Mapping[str, Sequence[Period]], now: datetime,
                  config: BaselineConfig | None = None, *,
                  until: datetime | None = None) -> dict[str, Baseline]:
    """Every baseline of one citizen at `now` from her history measured before `until` (when
    given), each series without its own `excluded` periods (pure)."""
    trained: dict[str, Baseline] = {}

    def learn(name: str, points: Sequence[Point], **extra: Any) -> None:
        trained[name] = train(name, points, excluded.get(name, ()), now, config,
                              resolution=RESOLUTION.get(name, 0.0), until=until, **extra)

    for name in series_names:
        if name not in (SPO2_PULSE, FIRST_MOTION):
            series = metrics.get(name)
            learn(name, metric_points(series) if series is not None else [])
    if FIRST_MOTION in series_names:
        learn(FIRST_MOTION, first_motion_points(events))
    if SPO2_PULSE in series_names:
        parts = scales(trained, metrics, excluded)
        learn(SPO2_PULSE, spo2_pulse_points(readings, parts) if parts is not None else [],
              parameters=parts)
    return trained


def train_from_history(history: CitizenHistory, plans: Iterable[str], spans: Iterable[AlertSpan],
                       pauses: Iterable[tuple[datetime, datetime | None]], now: datetime,
                       config: BaselineConfig, *, until: datetime | None = None
                       ) -> dict[str, Baseline]:
    """Her baselines at `now` from what `history` holds of the training window: what the live
    retraining (alerts/retraining.py) and replay both train."""
    since = now - config.training_window
    return train_citizen(series_of(plans), history.series_within(since, now),
                         history.readings_within(since, now), history.events_within(since, now),
                         excluded_periods(spans, pauses), now, config, until=until)
