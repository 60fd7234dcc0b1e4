"""Threshold rule: red outside the alert band, yellow outside the warning band. Bands are
inclusive limits of the acceptable range (a value equal to a limit is inside). A reading marked
implausible is judged per metric: a device problem (yellow `implausible:<metric>`), or, for
glucose, the emergency itself (a meter's LO/HI is real severe hypo- or hyperglycaemia)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from alerts.models import Bands, CitizenContext, Finding, ReadingView, Severity, Threshold
from alerts.rules.common import display, finding_about, unit
from devices.catalogue import IMPLAUSIBLE

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
    side = "below" if band.endswith("_low") else "above"
    kind = "alert" if severity is Severity.RED else "warning"
    summary = (f"{display(reading.metric)} {reading.value:g} {unit(reading.metric)} {side} the "
               f"{kind} limit {limit:g} (threshold v{threshold.version})")
    return finding_about(
        reading, ctx, now, rule=f"threshold:{reading.metric}", severity=severity, summary=summary,
        explanation={"metric": reading.metric, "value": reading.value, "band": band,
                     "limit": limit, "bands": _bands(threshold.bands),
                     "threshold_id": threshold.id, "threshold_version": threshold.version,
                     "quality": reading.quality},
        threshold_id=threshold.id, threshold_version=threshold.version)


def device_problem(reading: ReadingView, ctx: CitizenContext, now: datetime) -> Finding:
    """An implausible value taken as a device problem: check the device (and the citizen)."""
    return finding_about(
        reading, ctx, now, rule=f"implausible:{reading.metric}", severity=Severity.YELLOW,
        summary=(f"{display(reading.metric)} {reading.value:g} {unit(reading.metric)} is outside "
                 "what is possible: check the device and ask the citizen to measure again"),
        explanation={"metric": reading.metric, "value": reading.value, "quality": reading.quality,
                     "taken_as": DEVICE})


def evaluate(ctx: CitizenContext, thresholds: Mapping[str, Threshold],
             now: datetime) -> list[Finding]:
    """Threshold and implausible-value findings for the context's new readings."""
    findings = []
    for reading in ctx.new_readings:
        if reading.quality == IMPLAUSIBLE and IMPLAUSIBLE_AS.get(reading.metric, DEVICE) == DEVICE:
            findings.append(device_problem(reading, ctx, now))
            continue
        threshold = thresholds.get(reading.metric)
        if threshold is None:
            continue
        finding = threshold_finding(reading, threshold, ctx, now)
        if finding is not None:
            findings.append(finding)
    return findings
