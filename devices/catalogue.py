"""What Telecare can measure: metrics with UCUM units, LOINC and IEEE 11073 codes and plausible
ranges; the measurement types devices report; the events they send; the kinds of device."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, model_validator

from devices.errors import InvalidReading


class Metric(BaseModel):
    """One stored quantity. A value outside [possible_min, possible_max] is physiologically
    impossible, or a broken sensor, or the emergency itself (SpO2 45): it is stored with the
    quality mark `implausible`, kept out of aggregates by default, and the rules decide."""

    model_config = ConfigDict(frozen=True)

    code: str
    display: str
    ucum: str
    loinc: str
    mdc: int  # IEEE 11073-10101 nomenclature code (partition * 2**16 + term)
    mdc_ref: str
    possible_min: float
    possible_max: float

    @model_validator(mode="after")
    def _range_is_ordered(self) -> Metric:
        if not self.possible_min < self.possible_max:
            raise ValueError(f"{self.code}: possible_min must be below possible_max")
        return self


def _metric(code: str, display: str, ucum: str, loinc: str, mdc: int, mdc_ref: str,
            lo: float, hi: float) -> Metric:
    return Metric(code=code, display=display, ucum=ucum, loinc=loinc, mdc=mdc, mdc_ref=mdc_ref,
                  possible_min=lo, possible_max=hi)


METRICS: Mapping[str, Metric] = {m.code: m for m in (
    _metric("systolic_bp", "Systolic blood pressure", "mm[Hg]", "8480-6", 150021,
            "MDC_PRESS_BLD_NONINV_SYS", 40, 300),
    _metric("diastolic_bp", "Diastolic blood pressure", "mm[Hg]", "8462-4", 150022,
            "MDC_PRESS_BLD_NONINV_DIA", 20, 200),
    _metric("pulse_rate", "Pulse rate", "/min", "8867-4", 149546,
            "MDC_PULS_RATE_NON_INV", 20, 300),
    _metric("spo2", "Oxygen saturation (pulse oximetry)", "%", "59408-5", 150456,
            "MDC_PULS_OXIM_SAT_O2", 50, 100),
    _metric("body_weight", "Body weight", "kg", "29463-7", 188736,
            "MDC_MASS_BODY_ACTUAL", 10, 400),
    _metric("body_temperature", "Body temperature", "Cel", "8310-5", 150364,
            "MDC_TEMP_BODY", 25, 45),
    _metric("blood_glucose", "Glucose in capillary blood", "mmol/L", "15074-8", 160184,
            "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD", 0.5, 50),
    _metric("heart_rate", "Heart rate", "/min", "8867-4", 147842,
            "MDC_ECG_HEART_RATE", 20, 300),
    _metric("respiration_rate", "Respiratory rate", "/min", "9279-1", 151562,
            "MDC_RESP_RATE", 2, 80),
)}


class MeasurementType(StrEnum):
    """What a device reports in one reading; each maps its named values onto metrics."""

    BLOOD_PRESSURE = "blood_pressure"
    PULSE_OXIMETRY = "pulse_oximetry"
    BODY_WEIGHT = "body_weight"
    BODY_TEMPERATURE = "body_temperature"
    BLOOD_GLUCOSE = "blood_glucose"
    HEART_RATE = "heart_rate"
    RESPIRATION_RATE = "respiration_rate"


# Value name in the payload -> metric code. Every named value is required, no others allowed.
COMPONENTS: Mapping[MeasurementType, Mapping[str, str]] = {
    MeasurementType.BLOOD_PRESSURE: {"systolic": "systolic_bp", "diastolic": "diastolic_bp",
                                     "pulse": "pulse_rate"},
    MeasurementType.PULSE_OXIMETRY: {"spo2": "spo2", "pulse": "pulse_rate"},
    MeasurementType.BODY_WEIGHT: {"weight": "body_weight"},
    MeasurementType.BODY_TEMPERATURE: {"temperature": "body_temperature"},
    MeasurementType.BLOOD_GLUCOSE: {"glucose": "blood_glucose"},
    MeasurementType.HEART_RATE: {"heart_rate": "heart_rate"},
    MeasurementType.RESPIRATION_RATE: {"respiration_rate": "respiration_rate"},
}


# Parts of a measurement that are one clinical sign. Blood pressure is graded as a whole (ESC/ESH
# 2018: grade 2 is >=160 and/or >=100 mmHg); the cuff's pulse is a sign of its own.
SIGN_OF: Mapping[str, str] = {"systolic_bp": "blood_pressure", "diastolic_bp": "blood_pressure"}


def sign_of(metric: str) -> str:
    """The clinical sign a metric's threshold alerts are about (most metrics are their own)."""
    return SIGN_OF.get(metric, metric)


def parts_of(sign: str) -> tuple[str, ...]:
    """The metrics a `threshold:<sign>` alert is about."""
    return tuple(metric for metric, of in SIGN_OF.items() if of == sign) or (sign,)


class EventType(StrEnum):
    EMERGENCY_BUTTON = "emergency_button"
    MOTION = "motion"
    DOOR = "door"
    BED = "bed"
    QUESTIONNAIRE_ANSWER = "questionnaire_answer"


class DeviceKind(StrEnum):
    BP_MONITOR = "bp_monitor"
    PULSE_OXIMETER = "pulse_oximeter"
    SCALE = "scale"
    THERMOMETER = "thermometer"
    GLUCOMETER = "glucometer"
    VITALS_PATCH = "vitals_patch"
    EMERGENCY_BUTTON = "emergency_button"
    MOTION_SENSOR = "motion_sensor"
    DOOR_SENSOR = "door_sensor"
    BED_SENSOR = "bed_sensor"
    HOME_SCREEN = "home_screen"


# What each kind of device may report: a scale sending blood pressure is a configuration error.
DEVICE_MEASUREMENTS: Mapping[DeviceKind, frozenset[MeasurementType]] = {
    DeviceKind.BP_MONITOR: frozenset({MeasurementType.BLOOD_PRESSURE}),
    DeviceKind.PULSE_OXIMETER: frozenset({MeasurementType.PULSE_OXIMETRY}),
    DeviceKind.SCALE: frozenset({MeasurementType.BODY_WEIGHT}),
    DeviceKind.THERMOMETER: frozenset({MeasurementType.BODY_TEMPERATURE}),
    DeviceKind.GLUCOMETER: frozenset({MeasurementType.BLOOD_GLUCOSE}),
    DeviceKind.VITALS_PATCH: frozenset({MeasurementType.HEART_RATE,
                                        MeasurementType.RESPIRATION_RATE}),
}
DEVICE_EVENTS: Mapping[DeviceKind, frozenset[EventType]] = {
    DeviceKind.EMERGENCY_BUTTON: frozenset({EventType.EMERGENCY_BUTTON}),
    DeviceKind.MOTION_SENSOR: frozenset({EventType.MOTION}),
    DeviceKind.DOOR_SENSOR: frozenset({EventType.DOOR}),
    DeviceKind.BED_SENSOR: frozenset({EventType.BED}),
    DeviceKind.HOME_SCREEN: frozenset({EventType.QUESTIONNAIRE_ANSWER,
                                       EventType.EMERGENCY_BUTTON}),
}


VALID = "valid"
IMPLAUSIBLE = "implausible"


def _kind(device_kind: str) -> DeviceKind | None:
    # A registry row of a kind this version does not know refuses its items; it never raises.
    try:
        return DeviceKind(device_kind)
    except ValueError:
        return None


# (device kind, measurement type) -> [(value name, metric code, possible min, possible max)]:
# what metric_values checks for every reading, looked up once per reading, not rebuilt.
_MEASURES: Mapping[tuple[str, str], tuple[tuple[str, str, float, float], ...]] = {
    (kind.value, mtype.value): tuple((name, code, METRICS[code].possible_min,
                                      METRICS[code].possible_max)
                                     for name, code in COMPONENTS[mtype].items())
    for kind, mtypes in DEVICE_MEASUREMENTS.items() for mtype in mtypes}
_MEASUREMENT_TYPES = frozenset(mtype.value for mtype in MeasurementType)


def metric_values(device_kind: str, measurement: str,
                  values: Mapping[str, float]) -> list[tuple[str, float, str]]:
    """The (metric, value, quality) of each value of one reading, or InvalidReading with the
    reason it is refused. Details name fields and ranges, never the measured value."""
    measures = _MEASURES.get((device_kind, measurement))
    if measures is None:
        if measurement not in _MEASUREMENT_TYPES:
            raise InvalidReading("unknown_type", "unknown measurement type")
        raise InvalidReading("type_not_supported",
                             f"a {device_kind} device does not measure {measurement}")
    if len(values) != len(measures) or any(name not in values for name, *_ in measures):
        raise InvalidReading("invalid_components",
                             f"{measurement} needs values {sorted(n for n, *_ in measures)}")
    triples = []
    for name, metric_code, low, high in measures:
        value = float(values[name])
        if not math.isfinite(value):
            raise InvalidReading("schema_violation", f"{name} is not a finite number")
        triples.append((metric_code, value, VALID if low <= value <= high else IMPLAUSIBLE))
    return triples


# Required fields of each event's data, with the values they may take (None: any text/number).
EVENT_FIELDS: Mapping[EventType, Mapping[str, frozenset[str] | None]] = {
    EventType.EMERGENCY_BUTTON: {},
    EventType.MOTION: {},
    EventType.DOOR: {"state": frozenset({"open", "closed"})},
    EventType.BED: {"state": frozenset({"in", "out"})},
    EventType.QUESTIONNAIRE_ANSWER: {"questionnaire": None, "question": None, "answer": None},
}


def check_event(device_kind: str, event: str, data: Mapping[str, object]) -> None:
    """Raise InvalidReading unless this kind of device may send this event with this data."""
    try:
        etype = EventType(event)
    except ValueError:
        raise InvalidReading("unknown_type", "unknown event type") from None
    kind = _kind(device_kind)
    if kind is None or etype not in DEVICE_EVENTS.get(kind, frozenset()):
        raise InvalidReading("type_not_supported", f"a {device_kind} device does not send {event}")
    for name, allowed in EVENT_FIELDS[etype].items():
        if name not in data:
            raise InvalidReading("invalid_event_data", f"{event} needs data field {name!r}")
        if allowed is not None and data[name] not in allowed:
            raise InvalidReading("invalid_event_data",
                                 f"{event}.{name} must be one of {sorted(allowed)}")
