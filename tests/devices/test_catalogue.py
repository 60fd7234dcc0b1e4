import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.catalogue import (
    COMPONENTS,
    DEVICE_MEASUREMENTS,
    METRICS,
    MeasurementType,
    check_event,
    metric_values,
)
from devices.errors import InvalidReading


def test_every_metric_has_codes_units_and_an_ordered_range() -> None:
    for metric in METRICS.values():
        assert metric.ucum and metric.loinc and metric.mdc > 0
        assert metric.possible_min < metric.possible_max


def test_every_measurement_type_maps_onto_known_metrics_and_some_device() -> None:
    supported = set().union(*DEVICE_MEASUREMENTS.values())
    for mtype, components in COMPONENTS.items():
        assert set(components.values()) <= METRICS.keys()
        assert mtype in supported


def test_blood_pressure_becomes_three_metrics() -> None:
    pairs = metric_values("bp_monitor", "blood_pressure",
                          {"systolic": 142, "diastolic": 88, "pulse": 71})
    assert pairs == [("systolic_bp", 142.0, "valid"), ("diastolic_bp", 88.0, "valid"),
                     ("pulse_rate", 71.0, "valid")]


@pytest.mark.parametrize(("kind", "mtype", "values", "reason"), [
    ("bp_monitor", "blood_pressure", {"systolic": 120, "diastolic": 80}, "invalid_components"),
    ("bp_monitor", "blood_pressure", {"systolic": 120, "diastolic": 80, "pulse": 60, "x": 1},
     "invalid_components"),
    ("scale", "blood_pressure", {"systolic": 120, "diastolic": 80, "pulse": 60},
     "type_not_supported"),
    ("scale", "body_mass_index", {"bmi": 22}, "unknown_type"),
    ("teleporter", "body_weight", {"weight": 80}, "type_not_supported"),  # unknown device kind
    ("thermometer", "body_temperature", {"temperature": math.nan}, "schema_violation"),
])
def test_bad_readings_are_refused_with_their_reason(kind: str, mtype: str,
                                                     values: dict[str, float],
                                                     reason: str) -> None:
    with pytest.raises(InvalidReading) as refused:
        metric_values(kind, mtype, values)
    assert refused.value.reason == reason


@given(st.sampled_from(sorted(METRICS)), st.floats(allow_nan=False, allow_infinity=False))
def test_a_value_is_marked_implausible_exactly_when_it_is_physiologically_impossible(
        metric: str, value: float) -> None:
    mtype, name = next((t, n) for t, comps in COMPONENTS.items() for n, m in comps.items()
                       if m == metric)
    kind = next(k for k, types in DEVICE_MEASUREMENTS.items() if mtype in types)
    values = {n: (value if n == name else _middle(COMPONENTS[mtype][n]))
              for n in COMPONENTS[mtype]}
    spec = METRICS[metric]
    possible = spec.possible_min <= value <= spec.possible_max
    quality = "valid" if possible else "implausible"
    assert (metric, value, quality) in metric_values(kind, MeasurementType(mtype), values)


def _middle(metric: str) -> float:
    spec = METRICS[metric]
    return (spec.possible_min + spec.possible_max) / 2


def test_events_are_checked_against_the_device_kind_and_their_data() -> None:
    check_event("door_sensor", "door", {"state": "open"})
    with pytest.raises(InvalidReading, match="must be one of"):
        check_event("door_sensor", "door", {"state": "ajar"})
    with pytest.raises(InvalidReading) as refused:
        check_event("scale", "emergency_button", {})
    assert refused.value.reason == "type_not_supported"
    with pytest.raises(InvalidReading) as unknown_kind:  # a registry row this version lacks
        check_event("teleporter", "door", {"state": "open"})
    assert unknown_kind.value.reason == "type_not_supported"
