"""Threshold rule: red outside the alert band, yellow outside the warning band. Bands are
inclusive limits of the acceptable range (a value equal to a limit is inside). A reading marked
implausible is judged per metric: a device problem (yellow `implausible:<measurement>`), or, for
glucose, the emergency itself (a meter's LO/HI is real severe hypo- or hyperglycaemia).

One measurement is one problem: the parts of a blood pressure (systolic and diastolic) raise one
`threshold:blood_pressure` finding, as severe as the worse part, and a device's garbled
measurement (a cuff's systolic, diastolic and pulse all impossible) one device problem, rather
than an alert per part.

A yellow blood pressure above the plan's default high warning limit, when that limit sits at the
top of the citizen's own usual range and the reading is typical for her, is not raised
(anomaly.usual_for_her): her personal baseline moves the warning as her nurse would. Low limits,
limits a nurse set or proposes, and red are never moved."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from alerts.models import Bands, CitizenContext, Finding, ReadingView, Severity, Threshold
from alerts.rules.anomaly import usual_for_her
from alerts.rules.common import display, finding_about, unit
from devices.catalogue import COMPONENTS, IMPLAUSIBLE, MeasurementType, sign_of

# What an implausible value (outside the catalogue's possible range) most likely is. A
# fingertip oximeter below 50 % is a probe off or poor perfusion (oximeters are specified for
# 70-100 %, ISO 80601-2-61): a device problem to check, not a red emergency. Glucometers show
# LO/HI beyond their range, and a LO is severe hypoglycaemia: clinical.
DEVICE = "device"
CLINICAL = "clinical"
IMPLAUSIBLE_AS: Mapping[str, str] = {
    "spo2": DEVICE, "pulse_rate": DEVICE, "heart_rate": DEVICE, "systolic_bp": DEVICE,
    "diastolic_bp": DEVICE, "body_weight": DEVICE, "body_temperature": DEVICE,
    "respiration_rate": DEVICE, "blood_glucose": CLINICAL,
}


_WORSE = {Severity.RED: 0, Severity.YELLOW: 1}


def measurement_of(metrics: set[str]) -> str | None:
    """The one kind of measurement whose parts are these metrics (those one message carried),
    or None when more than one could be (a pulse alone: a cuff's or an oximeter's)."""
    kinds = [kind.value for kind in MeasurementType if metrics <= set(COMPONENTS[kind].values())]
    return kinds[0] if len(kinds) == 1 else None


def classify(value: float, bands: Bands) -> tuple[Severity, str, float] | None:
    """(severity, band crossed, its limit) of a value, or None inside the warning bands."""
    for severity, name, limit, below in (
            (Severity.RED, "alert_low", bands.alert_low, True),
            (Severity.RED, "alert_high", bands.alert_high, False),
            (Severity.YELLOW, "warning_low", bands.warning_low, True),
            (Severity.YELLOW, "warning_high", bands.warning_high, False)):
        if limit is not None and (value < limit if below else value > limit):
            return severity, name, limit
    return None


def _bands(bands: Bands) -> dict[str, float | None]:
    return bands.model_dump()


def threshold_finding(reading: ReadingView, threshold: Threshold, ctx: CitizenContext,
                      now: datetime) -> Finding | None:
    """The finding of one reading against its metric's threshold, if it is outside."""
    crossed = classify(reading.value, threshold.bands)
    if crossed is None:
        return None
    severity, band, limit = crossed
    if band == "warning_high" and threshold.version == 0 and threshold.bands.alert_high is not None \
            and usual_for_her(ctx, reading.metric, reading.value, limit):
        return None
    side = "below" if band.endswith("_low") else "above"
    kind = "alert" if severity is Severity.RED else "warning"
    summary = (f"{display(reading.metric)} {reading.value:g} {unit(reading.metric)} {side} the "
               f"{kind} limit {limit:g} (threshold v{threshold.version})")
    return finding_about(
        reading, ctx, now, rule=f"threshold:{sign_of(reading.metric)}", severity=severity,
        summary=summary,
        explanation={"metric": reading.metric, "value": reading.value, "band": band,
                     "limit": limit, "bands": _bands(threshold.bands),
                     "threshold_id": threshold.id, "threshold_version": threshold.version,
                     "quality": reading.quality},
        threshold_id=threshold.id, threshold_version=threshold.version)


def device_problem(readings: list[ReadingView], measurement: str | None, ctx: CitizenContext,
                   now: datetime) -> Finding:
    """The implausible values of one measurement taken as a device problem: check the device
    (and the citizen)."""
    readings = sorted(readings, key=lambda r: r.metric)  # the same identity in any order
    first = readings[0]
    told = ", ".join(f"{display(r.metric)} {r.value:g} {unit(r.metric)}" for r in readings)
    return finding_about(
        first, ctx, now, rule=f"implausible:{measurement or first.metric}",
        severity=Severity.YELLOW,
        summary=(f"{told} outside what is possible: check the device and ask the citizen to "
                 "measure again"),
        explanation={"metric": first.metric, "metrics": [r.metric for r in readings],
                     "value": first.value, "values": {r.metric: r.value for r in readings},
                     "quality": first.quality, "taken_as": DEVICE})


# What the explanation of a blood-pressure finding tells of each part.
PART_KEYS = ("metric", "value", "band", "limit", "threshold_version")


def _worst_of(findings: list[Finding]) -> Finding:
    """One finding for the parts of one measurement: the worse part's, naming every part."""
    if len(findings) == 1:
        return findings[0]
    # Worst first, ties by metric: the same identity (occurrence) whatever the readings' order.
    parts = sorted(findings, key=lambda f: (_WORSE[f.severity], f.explanation["metric"]))
    worst = parts[0]
    return replace(worst, summary="; ".join(f.summary for f in parts), explanation={
        **worst.explanation, "metrics": [f.explanation["metric"] for f in parts],
        "parts": [{k: f.explanation[k] for k in PART_KEYS} for f in parts]})


def _message(ctx: CitizenContext, reading: ReadingView) -> list[ReadingView]:
    """Every part of the message `reading` came in. The engine takes a message's queued parts
    together (context_repository._TAKEN) and the context holds what it took, so a measurement
    is judged whole, with the same identity, in any batch."""
    at, readings = reading.measured_at, ctx.readings
    parts = []
    index = bisect_left(readings, at, key=lambda r: r.measured_at)
    while index < len(readings) and readings[index].measured_at == at:
        other = readings[index]
        if other.device_id == reading.device_id and other.seq == reading.seq:
            parts.append(other)
        index += 1
    return parts if reading in parts else [*parts, reading]


def _measurement_findings(parts: list[ReadingView], ctx: CitizenContext,
                          thresholds: Mapping[str, Threshold], now: datetime) -> list[Finding]:
    garbled = [r for r in parts
               if r.quality == IMPLAUSIBLE and IMPLAUSIBLE_AS.get(r.metric, DEVICE) == DEVICE]
    found = [device_problem(garbled, measurement_of({r.metric for r in parts}), ctx, now)
             ] if garbled else []
    crossed: dict[str, list[Finding]] = {}
    for reading in parts:
        threshold = thresholds.get(reading.metric)
        if reading in garbled or threshold is None:
            continue
        finding = threshold_finding(reading, threshold, ctx, now)
        if finding is not None:
            crossed.setdefault(finding.rule, []).append(finding)
    return found + [_worst_of(same) for same in crossed.values()]


def evaluate(ctx: CitizenContext, thresholds: Mapping[str, Threshold],
             now: datetime) -> list[Finding]:
    """Threshold and implausible-value findings for the measurements of the context's new
    readings, one per sign of a measurement."""
    messages: dict[tuple[str, datetime, int], ReadingView] = {}
    for reading in ctx.new_readings:
        messages.setdefault((reading.device_id, reading.measured_at, reading.seq), reading)
    return [finding for reading in messages.values()
            for finding in _measurement_findings(_message(ctx, reading), ctx, thresholds, now)]
