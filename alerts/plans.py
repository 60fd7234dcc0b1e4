"""Monitoring plan templates per condition: what a citizen measures, when (on her Copenhagen
wall clock), with which grace, the default thresholds, and which rules watch her. Every default
names its clinical source; docs/alerts.md lists them. A citizen's plan `settings` (the jsonb of
citizen_plans) may override the schedule; `validate_settings` is the one check of them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import cached_property, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alerts.errors import InvalidPlan
from alerts.models import Bands, Severity, Threshold

# Citizens live in Denmark: schedules and "by 10:00" are on Copenhagen wall time (DST-aware).
LOCAL = ZoneInfo("Europe/Copenhagen")

# By default the care team is told when a whole day's windows of a measurement were missed, and
# never of a single window: that one reminds the citizen on her screen, which is what a nurse
# would do first.
ALERT_AFTER_MISSED = 2  # windows in a row, at least

# Rule families a plan can switch on. Threshold, emergency button, questionnaire and the device
# silence rules watch every citizen whatever her plans.
NEWS2 = "news2"
WEIGHT_GAIN = "trend:weight_gain"
MISSED = "missed"
NOT_MEASURING = "not_measuring"
INACTIVITY = "inactivity"


@dataclass(frozen=True)
class Window:
    """A daily window on the local wall clock, within one day (start < end)."""

    start: time
    end: time

    @cached_property
    def label(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def on(self, day: date) -> tuple[datetime, datetime]:
        """The UTC-aware instants of this window on local calendar day `day`."""
        return (datetime.combine(day, self.start, LOCAL), datetime.combine(day, self.end, LOCAL))


@dataclass(frozen=True)
class Scheduled:
    """One measurement the plan asks for: a metric (blood pressure is scheduled as its
    systolic component), the daily windows, how long after a window it may still come, and
    after how many missed windows in a row the care team is told (the citizen's screen is
    reminded of every one); None: a day's windows, at least ALERT_AFTER_MISSED."""

    metric: str
    windows: tuple[Window, ...]
    grace: timedelta = timedelta(hours=1)
    alert_after: int | None = None

    @property
    def told_after(self) -> int:
        """Missed windows in a row before the care team is told."""
        if self.alert_after is not None:
            return self.alert_after
        return max(ALERT_AFTER_MISSED, len(self.windows))


@dataclass(frozen=True)
class RateRule:
    """A change of `change` (negative: a fall) or more against the mean of the readings within
    `within` before a reading (at least `min_readings` of them) raises `severity`."""

    metric: str
    change: float
    within: timedelta
    severity: Severity
    source: str
    min_readings: int = 2


@dataclass(frozen=True)
class WeightGain:
    """Heart-failure congestion: a gain of more than `kg` against the lowest weight within `within`."""

    kg: float = 2.0
    within: timedelta = timedelta(days=3)


@dataclass(frozen=True)
class Inactivity:
    """No motion from `start` until `by` (local), or, during the day until `day_end`, no
    motion for `max_quiet`: a frail citizen living alone may be lying on the floor."""

    start: time = time(4, 0)
    by: time = time(10, 0)
    max_quiet: timedelta | None = timedelta(hours=4)
    day_end: time = time(21, 0)


@dataclass(frozen=True)
class PlanTemplate:
    """What one condition's plan watches, with the defaults a nurse may override."""

    name: str
    title: str
    measurements: tuple[Scheduled, ...]
    thresholds: Mapping[str, Bands]
    rules: frozenset[str]
    news2_scale: int | None = None
    weight_gain: WeightGain | None = None
    rates: tuple[RateRule, ...] = ()
    inactivity: Inactivity | None = None
    # metric or rule -> the clinical source of its default (docs/alerts.md lists them).
    sources: Mapping[str, str] = field(default_factory=dict)


def _w(start: str, end: str) -> Window:
    return Window(time.fromisoformat(start), time.fromisoformat(end))


# Sources, named once. Bands are inclusive limits of the acceptable range: a value equal to a
# limit is inside; red below alert_low / above alert_high, yellow below warning_low / above
# warning_high.
RCP_NEWS2 = "Royal College of Physicians, National Early Warning Score (NEWS) 2, 2017"
BTS_O2 = ("British Thoracic Society guideline for oxygen use in adults, 2017: target SpO2 "
          "88-92% in COPD at risk of hypercapnia; a fall of >=3% should prompt assessment")
ESC_HF = ("ESC 2021 heart-failure guidelines / HFA self-care advice: weight gain >2 kg in 3 days "
          "means contact the care team")
ESC_HF_BP = ("ESC 2021 heart-failure guidelines: symptomatic hypotension SBP <90 mmHg; ESC/ESH "
             "2018 grades for the upper bands")
ESC_ESH_BP = ("ESC/ESH 2018 hypertension guidelines: grade 2 >=160/>=100, grade 3 >=180/>=110 "
              "mmHg; hypotension systolic <90 mmHg")
ADA_HYPO = ("ADA Standards of Care / International Hypoglycaemia Study Group 2017: level 1 "
            "<3.9 mmol/L, level 2 <3.0 mmol/L")
ADA_HYPER = ("ADA consensus on hyperglycaemic crises (Kitabchi 2009): >13.9 mmol/L (250 mg/dL) "
             "check for ketoacidosis; >33.3 mmol/L (600 mg/dL) hyperosmolar state")
FRAIL = ("Telecare default (no clinical guideline): no motion by 10:00 local or 4 h without "
         "motion in the day, the fixed window that issue 6 asks for; the learned version belongs "
         "to the anomaly issue")

SILENCE = ("Telecare default (no clinical guideline): 3 consecutive missed windows while the "
           "device is online")

_PULSE = Bands(alert_low=40, warning_low=50, warning_high=110, alert_high=130)  # NEWS2 pulse bands
# Hypothermia below 35.0 degC red; fever above 38.0 yellow, above 39.0 red (NEWS2 38.1-39.0
# scores 1, >=39.1 scores 2). No yellow low band: home ear thermometers read 35.5-36.0 often.
_TEMPERATURE = Bands(alert_low=35.0, warning_high=38.0, alert_high=39.0)
_SYSTOLIC = Bands(alert_low=90, warning_low=100, warning_high=159, alert_high=179)  # ESC/ESH, NEWS2
# Heart failure runs low on its medication (100-110 is usual): yellow only below 90 (ESC HF:
# symptomatic hypotension, SBP < 90 mmHg).
_SYSTOLIC_HF = Bands(warning_low=90, warning_high=159, alert_high=179)
_DIASTOLIC = Bands(warning_high=99, alert_high=109)  # ESC/ESH grade 2 and 3
_GLUCOSE = Bands(alert_low=3.0, warning_low=3.9, warning_high=13.9, alert_high=33.3)  # ADA/IHSG

PLANS: Mapping[str, PlanTemplate] = {p.name: p for p in (
    PlanTemplate(
        name="copd", title="COPD",
        measurements=(Scheduled("spo2", (_w("06:30", "11:00"), _w("17:00", "22:00"))),
                      Scheduled("body_temperature", (_w("06:30", "11:00"),))),
        # SpO2: yellow below the BTS target (88), red where NEWS2 scale 2 scores 3 (<=83).
        thresholds={"spo2": Bands(alert_low=84, warning_low=88), "pulse_rate": _PULSE,
                    "body_temperature": _TEMPERATURE},
        rules=frozenset({NEWS2, MISSED, NOT_MEASURING, "rate"}),
        news2_scale=2,
        rates=(RateRule("spo2", -3.0, timedelta(hours=48), Severity.YELLOW, BTS_O2),),
        sources={"spo2": BTS_O2 + "; " + RCP_NEWS2, "pulse_rate": RCP_NEWS2,
                 "body_temperature": RCP_NEWS2, NEWS2: RCP_NEWS2 + " (SpO2 scale 2)",
                 "rate:spo2": BTS_O2, MISSED: "Telecare default: twice daily, 1 h grace",
                 NOT_MEASURING: SILENCE}),
    PlanTemplate(
        name="heart_failure", title="Heart failure",
        measurements=(Scheduled("body_weight", (_w("06:00", "11:00"),)),
                      Scheduled("systolic_bp", (_w("06:00", "11:00"),))),
        thresholds={"systolic_bp": _SYSTOLIC_HF, "diastolic_bp": _DIASTOLIC, "pulse_rate": _PULSE},
        rules=frozenset({WEIGHT_GAIN, NEWS2, MISSED, NOT_MEASURING}),
        news2_scale=1, weight_gain=WeightGain(),
        sources={WEIGHT_GAIN: ESC_HF, "systolic_bp": ESC_HF_BP, "diastolic_bp": ESC_ESH_BP,
                 "pulse_rate": RCP_NEWS2, NEWS2: RCP_NEWS2 + " (SpO2 scale 1)",
                 MISSED: "ESC HF self-care: weigh daily in the morning; 1 h grace",
                 NOT_MEASURING: SILENCE}),
    PlanTemplate(
        name="diabetes", title="Diabetes",
        measurements=(Scheduled("blood_glucose", (_w("06:00", "09:30"), _w("11:00", "14:30"),
                                                  _w("17:00", "20:30"))),),
        thresholds={"blood_glucose": _GLUCOSE},
        rules=frozenset({MISSED, NOT_MEASURING}),
        sources={"blood_glucose": ADA_HYPO + "; " + ADA_HYPER,
                 MISSED: "Telecare default: before the three main meals, 1 h grace",
                 NOT_MEASURING: SILENCE}),
    PlanTemplate(
        name="hypertension", title="Hypertension",
        measurements=(Scheduled("systolic_bp", (_w("06:00", "11:00"), _w("18:00", "23:00"))),),
        thresholds={"systolic_bp": _SYSTOLIC, "diastolic_bp": _DIASTOLIC},
        rules=frozenset({MISSED, NOT_MEASURING}),
        sources={"systolic_bp": ESC_ESH_BP, "diastolic_bp": ESC_ESH_BP,
                 MISSED: "ESC/ESH 2018 home BP monitoring: morning and evening",
                 NOT_MEASURING: SILENCE}),
    PlanTemplate(
        name="frail_alone", title="Frail, living alone",
        measurements=(), thresholds={}, rules=frozenset({INACTIVITY}),
        inactivity=Inactivity(), sources={INACTIVITY: FRAIL}),
)}


class _WindowSetting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> _WindowSetting:
        if not self.start < self.end:
            raise ValueError("a window starts before it ends, within one day")
        return self


class _ScheduleSetting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    windows: tuple[_WindowSetting, ...] | None = Field(default=None, min_length=1, max_length=6)
    grace_minutes: int | None = Field(default=None, strict=True, ge=0, le=720)
    # 1: the care team is told of the first missed window (no reminder first).
    alert_after_missed: int | None = Field(default=None, strict=True, ge=1, le=6)
    # False drops this measurement from the citizen's schedule.
    enabled: bool = Field(default=True, strict=True)


class _InactivitySetting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: time | None = None
    by: time | None = None
    max_quiet_hours: float | None = Field(default=None, strict=True, gt=0, le=16)
    day_end: time | None = None


class PlanSettings(BaseModel):
    """What citizen_plans.settings may hold: overrides of the template's schedule. Numbers and
    switches are strict: "2" or 1.0 is a mistake to refuse, not a value to guess at."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedule: dict[str, _ScheduleSetting] = Field(default_factory=dict)
    spo2_scale: int | None = Field(default=None, strict=True, ge=1, le=2)
    weight_gain_kg: float | None = Field(default=None, strict=True, gt=0, le=10)
    weight_gain_days: int | None = Field(default=None, strict=True, ge=1, le=3)
    inactivity: _InactivitySetting | None = None
    # When the plan started: windows before it are not missed (the engine may set it).
    valid_from: datetime | None = None

    @field_validator("valid_from")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("valid_from needs a time zone")
        return value


def validate_settings(plan: str, settings: Mapping[str, Any]) -> PlanSettings:
    """The checked settings of `plan`, or InvalidPlan saying what is wrong."""
    template = PLANS.get(plan)
    if template is None:
        raise InvalidPlan(f"unknown plan {plan!r}; plans are {sorted(PLANS)}")
    try:
        checked = PlanSettings.model_validate(dict(settings))
    except ValidationError as error:
        raise InvalidPlan(f"invalid settings for plan {plan!r}: {error.errors()[0]['msg']} "
                          f"at {'.'.join(map(str, error.errors()[0]['loc']))}") from None
    scheduled = {s.metric for s in template.measurements}
    unknown = sorted(set(checked.schedule) - scheduled)
    if unknown:
        raise InvalidPlan(f"plan {plan!r} schedules {sorted(scheduled)}, not {unknown}")
    if checked.inactivity is not None and template.inactivity is None:
        raise InvalidPlan(f"plan {plan!r} has no inactivity window")
    if checked.weight_gain_kg is not None and template.weight_gain is None and \
            checked.weight_gain_days is None:
        raise InvalidPlan(f"plan {plan!r} does not watch weight gain")
    inactivity = _inactivity(template.inactivity, checked.inactivity)
    if inactivity is not None and not inactivity.start < inactivity.by < inactivity.day_end:
        raise InvalidPlan("inactivity needs start < by < day_end")
    return checked


def _inactivity(base: Inactivity | None, override: _InactivitySetting | None) -> Inactivity | None:
    if base is None or override is None:
        return base
    quiet = (timedelta(hours=override.max_quiet_hours) if override.max_quiet_hours is not None
             else base.max_quiet)
    return Inactivity(start=override.start or base.start, by=override.by or base.by,
                      max_quiet=quiet, day_end=override.day_end or base.day_end)


def _scheduled(base: Scheduled, override: _ScheduleSetting | None) -> Scheduled | None:
    if override is None:
        return base
    if not override.enabled:
        return None
    windows = (tuple(Window(w.start, w.end) for w in override.windows)
               if override.windows is not None else base.windows)
    grace = (timedelta(minutes=override.grace_minutes) if override.grace_minutes is not None
             else base.grace)
    return Scheduled(base.metric, windows, grace, override.alert_after_missed or base.alert_after)


def apply_settings(template: PlanTemplate, settings: PlanSettings) -> PlanTemplate:
    """The template with a citizen's overrides applied."""
    measurements = tuple(s for s in (_scheduled(m, settings.schedule.get(m.metric))
                                     for m in template.measurements) if s is not None)
    gain = template.weight_gain
    if gain is not None:
        gain = WeightGain(kg=settings.weight_gain_kg or gain.kg,
                          within=(timedelta(days=settings.weight_gain_days)
                                  if settings.weight_gain_days else gain.within))
    return replace(template, measurements=measurements, weight_gain=gain,
                   news2_scale=settings.spo2_scale or template.news2_scale,
                   inactivity=_inactivity(template.inactivity, settings.inactivity))


@dataclass(frozen=True)
class Monitoring:
    """The plans of one citizen combined into what the rules watch."""

    measurements: tuple[Scheduled, ...] = ()
    rules: frozenset[str] = frozenset()
    news2_scale: int | None = None
    weight_gain: WeightGain | None = None
    rates: tuple[RateRule, ...] = ()
    inactivity: Inactivity | None = None
    valid_from: datetime | None = None
    # Plans whose stored settings failed validation (their template defaults were used).
    invalid_settings: tuple[str, ...] = ()


# monitoring() results by plans and settings: every batch asks again for each of its citizens,
# and validating settings costs far more than the rules themselves. Cleared when full.
_MONITORING: dict[str, Monitoring] = {}
_MONITORING_MAX = 10_000


def monitoring(plans: Iterable[str], settings: Mapping[str, Mapping[str, Any]]) -> Monitoring:
    """Combine a citizen's plans with their settings. Unknown plans are skipped and invalid
    settings fall back to the template: evaluation never fails on stored configuration (it
    is validated when a nurse saves it)."""
    names = sorted(set(plans))
    key = json.dumps([names, settings], sort_keys=True, default=str)
    known = _MONITORING.get(key)
    if known is None:
        if len(_MONITORING) >= _MONITORING_MAX:
            _MONITORING.clear()
        known = _MONITORING[key] = _monitoring(names, settings)
    return known


def _monitoring(names: Sequence[str], settings: Mapping[str, Mapping[str, Any]]) -> Monitoring:
    templates: list[PlanTemplate] = []
    invalid: list[str] = []
    starts: list[datetime] = []
    for name in names:
        template = PLANS.get(name)
        if template is None:
            continue
        try:
            checked = validate_settings(name, settings.get(name, {}))
        except InvalidPlan:
            invalid.append(name)
            checked = PlanSettings()
        if checked.valid_from is not None:
            starts.append(checked.valid_from)
        templates.append(apply_settings(template, checked))
    return _combine(templates, tuple(invalid), min(starts) if starts else None)


def _combine(templates: Sequence[PlanTemplate], invalid: tuple[str, ...],
             valid_from: datetime | None) -> Monitoring:
    seen: dict[tuple[str, Window], Scheduled] = {}
    for template in templates:
        for scheduled in template.measurements:
            for window in scheduled.windows:
                key = (scheduled.metric, window)
                known = seen.get(key, scheduled)
                # The strictest plan decides: the shortest grace, the team told soonest.
                seen[key] = Scheduled(scheduled.metric, (window,), min(known.grace, scheduled.grace),
                                      min(known.told_after, scheduled.told_after))
    scales = [t.news2_scale for t in templates if t.news2_scale is not None]
    gains = [t.weight_gain for t in templates if t.weight_gain is not None]
    inactivity = next((t.inactivity for t in templates if t.inactivity is not None), None)
    return Monitoring(
        measurements=tuple(seen[key] for key in sorted(seen, key=lambda k: (k[0], k[1].start))),
        rules=frozenset().union(*(t.rules for t in templates)),
        # Scale 2 when any plan prescribes it (the COPD target range applies whatever else).
        news2_scale=max(scales) if scales else None,
        weight_gain=min(gains, key=lambda g: (g.kg, -g.within.total_seconds()), default=None),
        rates=tuple(r for t in templates for r in t.rates),
        inactivity=inactivity, valid_from=valid_from, invalid_settings=invalid)


def _stricter(a: float | None, b: float | None, low: bool) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b) if low else min(a, b)


def merge_bands(bands: Sequence[Bands]) -> Bands:
    """The stricter of several plans' bands, band by band (a present band beats an absent
    one). Falls back to the first plan's bands if the merge would cross."""
    merged: dict[str, float | None] = {}
    for name, low in (("alert_low", True), ("warning_low", True), ("warning_high", False),
                      ("alert_high", False)):
        value: float | None = None
        for b in bands:
            value = _stricter(value, getattr(b, name), low)
        merged[name] = value
    try:
        return Bands(**merged)
    except ValidationError:
        return bands[0]


def default_thresholds(plans: Sequence[str]) -> dict[str, Threshold]:
    """The plans' default bands per metric (stricter wins), as version 0 without a row id."""
    return dict(_default_thresholds(tuple(sorted(set(plans)))))


@lru_cache(maxsize=256)
def _default_thresholds(names: tuple[str, ...]) -> dict[str, Threshold]:
    per_metric: dict[str, list[Bands]] = {}
    for name in names:
        template = PLANS.get(name)
        if template is None:
            continue
        for metric, bands in template.thresholds.items():
            per_metric.setdefault(metric, []).append(bands)
    return {metric: Threshold(metric=metric, bands=merge_bands(bands), version=0, id=None)
            for metric, bands in sorted(per_metric.items())}
