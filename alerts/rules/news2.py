"""NEWS2 (Royal College of Physicians 2017) from home vitals measured within one hour.

Required: SpO2 and pulse (one pulse-oximeter measurement gives both; a vitals patch's heart rate
stands in for pulse). Respiration rate, systolic blood pressure and temperature count when
measured within the hour before; a missing one scores 0, so a home score is a lower bound of the
full one: it never overstates, and the explanation lists what was missing. Consciousness is
Alert and the citizen on air unless a questionnaire answer within the hour says otherwise
(`new_confusion` / `on_oxygen` = yes). Values are rounded to the chart's resolution (whole
numbers; temperature to 0.1 degC, half up) before the bands apply.

Mapping (RCP: 0-4 low, a 3 in one parameter low-medium, 5-6 medium "urgent response", >=7
high "emergency response"): >=7 red; 5-6 yellow; a single parameter scoring 3 yellow. Below
that, nothing. Implausible readings take no part (the threshold rule reports them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from alerts.models import CitizenContext, EventView, Finding, ReadingView, Series, Severity
from alerts.rules.common import finding_about
from devices.catalogue import IMPLAUSIBLE

WINDOW = timedelta(hours=1)
PARAMETERS = ("respiration_rate", "spo2", "systolic_bp", "pulse_rate", "body_temperature")
REQUIRED = ("spo2", "pulse_rate")
RED_FROM = 7
YELLOW_FROM = 5


def _round(value: float, places: str = "1") -> Decimal:
    return Decimal(repr(value)).quantize(Decimal(places), rounding=ROUND_HALF_UP)


def score_respiration(value: float) -> int:
    v = _round(value)
    return 3 if v <= 8 else 1 if v <= 11 else 0 if v <= 20 else 2 if v <= 24 else 3


def score_spo2_scale1(value: float) -> int:
    v = _round(value)
    return 3 if v <= 91 else 2 if v <= 93 else 1 if v <= 95 else 0


def score_spo2_scale2(value: float, oxygen: bool) -> int:
    """Scale 2 (target 88-92 %): high saturations score only on oxygen."""
    v = _round(value)
    if v <= 92 or not oxygen:
        return 3 if v <= 83 else 2 if v <= 85 else 1 if v <= 87 else 0
    return 1 if v <= 94 else 2 if v <= 96 else 3


def score_systolic(value: float) -> int:
    v = _round(value)
    return 3 if v <= 90 else 2 if v <= 100 else 1 if v <= 110 else 0 if v <= 219 else 3


def score_pulse(value: float) -> int:
    v = _round(value)
    return 3 if v <= 40 else 1 if v <= 50 else 0 if v <= 90 else 1 if v <= 110 else 2 if v <= 130 else 3


def score_temperature(value: float) -> int:
    v = _round(value, "0.1")
    return (3 if v <= Decimal("35.0") else 1 if v <= Decimal("36.0") else 0 if v <= Decimal("38.0")
            else 1 if v <= Decimal("39.0") else 2)


@dataclass(frozen=True)
class Score:
    """One NEWS2 evaluation: the points per parameter and what the aggregate triggers."""

    parts: Mapping[str, int]
    values: Mapping[str, float]
    missing: tuple[str, ...]
    scale: int
    oxygen: bool
    confused: bool

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def severity(self) -> Severity | None:
        if self.total >= RED_FROM:
            return Severity.RED
        if self.total >= YELLOW_FROM or any(p == 3 for p in self.parts.values()):
            return Severity.YELLOW
        return None


def score(values: Mapping[str, float], scale: int, oxygen: bool = False,
          confused: bool = False) -> Score:
    """The NEWS2 parts of the measured `values` (metric -> value); spo2 and pulse_rate required."""
    missing = tuple(p for p in PARAMETERS if p not in values)
    if any(p in missing for p in REQUIRED):
        raise ValueError(f"NEWS2 needs {REQUIRED}")
    scorers: dict[str, Callable[[float], int]] = {
        "respiration_rate": score_respiration, "systolic_bp": score_systolic,
        "pulse_rate": score_pulse, "body_temperature": score_temperature,
        "spo2": (score_spo2_scale1 if scale == 1
                 else lambda v: score_spo2_scale2(v, oxygen))}
    parts = {p: scorers[p](values[p]) for p in PARAMETERS if p in values}
    parts["air_or_oxygen"] = 2 if oxygen else 0
    parts["consciousness"] = 3 if confused else 0
    return Score(parts=parts, values=dict(values), missing=missing, scale=scale, oxygen=oxygen,
                 confused=confused)


def _answer(events: Sequence[EventView], question: str, start: datetime, end: datetime) -> bool:
    answers = [e for e in events if e.kind == "questionnaire_answer"
               and e.data.get("question") == question and start <= e.measured_at <= end]
    if not answers:
        return False
    latest = max(answers, key=lambda e: (e.measured_at, e.seq))
    return str(latest.data.get("answer")).strip().lower() in ("yes", "true", "1")


VITALS = (*PARAMETERS, "heart_rate")  # a pulse from a heart-rate sensor counts as pulse


def vitals(ctx: CitizenContext) -> dict[str, Series]:
    """The context's plausible readings of each vital, for score_at."""
    return {metric: ctx.series(metric) for metric in VITALS}


def score_at(ctx: CitizenContext, anchor: datetime, scale: int,
             series: Mapping[str, Series] | None = None) -> Score | None:
    """NEWS2 from the latest of each vital within WINDOW up to `anchor`, if SpO2 and pulse are
    there (`series`: vitals(ctx), when scoring several anchors of one context)."""
    series = series or vitals(ctx)
    start = anchor - WINDOW
    values: dict[str, float] = {}
    for metric in PARAMETERS:
        reading = series[metric].latest(start, anchor)
        if reading is None and metric == "pulse_rate":
            reading = series["heart_rate"].latest(start, anchor)
        if reading is not None:
            values[metric] = reading.value
    if any(p not in values for p in REQUIRED):
        return None
    return score(values, scale, oxygen=_answer(ctx.events, "on_oxygen", start, anchor),
                 confused=_answer(ctx.events, "new_confusion", start, anchor))


def evaluate(ctx: CitizenContext, scale: int, now: datetime) -> list[Finding]:
    """A finding per measured time of the new vitals whose NEWS2 triggers."""
    by_time: dict[datetime, list[ReadingView]] = {}
    for reading in ctx.new_readings:
        if reading.metric in VITALS and reading.quality != IMPLAUSIBLE:
            by_time.setdefault(reading.measured_at, []).append(reading)
    findings = []
    series = vitals(ctx) if by_time else {}
    for anchor in sorted(by_time):
        result = score_at(ctx, anchor, scale, series)
        severity = result.severity if result is not None else None
        if result is None or severity is None:
            continue
        # The least current of the readings at this time decides how current the score is.
        item = min(by_time[anchor], key=lambda r: (not r.late or r.delay_cause == "transit", r.seq))
        threes = sorted(p for p, v in result.parts.items() if v == 3)
        summary = f"NEWS2 {result.total} (SpO2 scale {scale})" + (
            f"; 3 points for {', '.join(threes)}" if threes else "") + (
            f"; not measured: {', '.join(result.missing)}" if result.missing else "")
        findings.append(finding_about(
            item, ctx, now, rule="news2", severity=severity, summary=summary,
            occurrence=f"news2:{anchor.isoformat()}",
            explanation={"metrics": list(PARAMETERS), "total": result.total,
                         "parts": dict(result.parts), "values": dict(result.values),
                         "missing": list(result.missing), "partial": bool(result.missing),
                         "scale": scale, "oxygen": result.oxygen,
                         "consciousness": "new_confusion" if result.confused else "alert",
                         "window_s": WINDOW.total_seconds(), "anchor": anchor.isoformat()}))
    return findings
